// The signaling WebSocket (protocol version 1, docs/signaling.md): one JSON object a frame.

export function readConfig() {
  const meta = document.querySelector('meta[name="antechamber-config"]');
  return JSON.parse(meta.content);
}

// The link this page was opened with: a token (/j/, /h/) or a room (/r/{clinic}/{room}).
export function linkOfPage(location) {
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "r" && parts.length === 3) {
    return { clinic: parts[1], room: parts[2] };
  }
  if ((parts[0] === "j" || parts[0] === "h") && parts.length === 2) {
    const link = { token: parts[1] };
    const session = new URLSearchParams(location.search).get("session");
    if (session) link.session_id = session;
    return link;
  }
  return null;
}

// One question on a socket of its own: `check` is answered with `link_ready` or `refused`.
export function ask(url, frame, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (error) {
      reject(error);
      return;
    }
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error("no answer"));
    }, timeoutMs);
    ws.onopen = () => ws.send(JSON.stringify(frame));
    ws.onmessage = (event) => {
      const answer = JSON.parse(event.data);
      if (answer.type === "error") return; // e.g. a frame limit; the answer follows
      clearTimeout(timer);
      resolve(answer);
      ws.close();
    };
    ws.onerror = () => {
      clearTimeout(timer);
      reject(new Error("the video service cannot be reached"));
    };
  });
}

// A joined connection: frames go to `onFrame`; a drop that was not an ending goes to `onDrop`.
export class Connection {
  constructor(url, { onFrame, onDrop }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onDrop = onDrop;
    this.ws = null;
    this.finished = false;
  }

  open(first) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => {
        ws.send(JSON.stringify(first));
        resolve();
      };
      ws.onmessage = (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        this.onFrame(frame);
      };
      ws.onerror = () => reject(new Error("the video service cannot be reached"));
      ws.onclose = (event) => {
        if (this.ws === ws && !this.finished) this.onDrop(event);
      };
    });
  }

  send(type, fields = {}) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type, ...fields }));
    }
  }

  finish() {
    this.finished = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}
