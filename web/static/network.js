// The pre-call network test (docs/signaling.md, "Pre-call network test"): a few seconds of
// real audio and video to the media node that will host the call and back, measured with
// getStats(); signaling answers the verdict.

const SAMPLE_MS = 1000;
const CONNECT_MS = 10000;

// The test's picture: noise, which no encoder can squeeze, so the bitrate reached is the
// path's and not the scene's (a still room encodes into a fraction of what the path could
// carry). 640x360 lets a browser send up to about 1.7 Mbit/s.
function noiseTrack() {
  const canvas = document.createElement("canvas");
  canvas.width = 640;
  canvas.height = 360;
  const g = canvas.getContext("2d");
  const image = g.createImageData(canvas.width, canvas.height);
  const pixels = new Uint32Array(image.data.buffer);
  let seed = 0x9e3779b9;
  const timer = setInterval(() => {
    for (let i = 0; i < pixels.length; i += 1) {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      pixels[i] = seed | 0xff000000; // opaque
    }
    g.putImageData(image, 0, 0);
  }, 33);
  const track = canvas.captureStream(30).getVideoTracks()[0];
  return { track, stop: () => clearInterval(timer) };
}

// A quiet tone, for someone without a microphone.
function toneTrack() {
  if (!window.AudioContext) return null;
  const audio = new AudioContext();
  const tone = audio.createOscillator();
  const gain = audio.createGain();
  gain.gain.value = 0.01;
  const out = audio.createMediaStreamDestination();
  tone.connect(gain).connect(out);
  tone.start();
  return { track: out.stream.getAudioTracks()[0], stop: () => audio.close() };
}

// The frames of one socket, awaited in order by type.
class Socket {
  constructor(url) {
    this.ws = new WebSocket(url);
    this.frames = [];
    this.waiters = [];
    this.closed = false;
    this.opened = new Promise((resolve, reject) => {
      this.ws.onopen = resolve;
      this.ws.onerror = () => reject(new Error("the video service cannot be reached"));
    });
    this.ws.onmessage = (event) => {
      try {
        this.frames.push(JSON.parse(event.data));
      } catch {
        return;
      }
      this.wake();
    };
    this.ws.onclose = () => {
      this.closed = true;
      this.wake();
    };
  }

  wake() {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  send(frame) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  // The next frame of one of `types` (a `refused` ends the wait too), within `ms`.
  async next(types, ms) {
    const until = performance.now() + ms;
    for (;;) {
      const i = this.frames.findIndex((f) => types.includes(f.type) || f.type === "refused");
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (this.closed) throw new Error("the connection test was interrupted");
      const left = until - performance.now();
      if (left <= 0) throw new Error("the video service did not answer in time");
      await new Promise((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, left);
      });
    }
  }

  close() {
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}

// What the browser saw of the node's echo, and of the path, from getStats().
class Measures {
  constructor() {
    this.peakKbps = 0;
    this.last = null;
    this.rtts = [];
    this.relayed = null;
    this.final = null;
  }

  async sample(pc) {
    const report = await pc.getStats();
    let bytes = 0;
    const tracks = [];
    let pair = null;
    const byId = new Map();
    report.forEach((s) => {
      byId.set(s.id, s);
      if (s.type === "inbound-rtp") {
        bytes += s.bytesReceived || 0;
        tracks.push(s);
      }
      if (s.type === "transport" && s.selectedCandidatePairId) pair = s.selectedCandidatePairId;
    });
    if (!pair) {
      report.forEach((s) => {
        if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s.id;
      });
    }
    const selected = pair && byId.get(pair);
    if (selected) {
      if (typeof selected.currentRoundTripTime === "number") {
        this.rtts.push(selected.currentRoundTripTime * 1000);
      }
      const local = byId.get(selected.localCandidateId);
      if (local) this.relayed = local.candidateType === "relay";
    }
    const now = performance.now();
    if (this.last) {
      const kbps = ((bytes - this.last.bytes) * 8) / (now - this.last.at);
      this.peakKbps = Math.max(this.peakKbps, kbps);
    }
    this.last = { at: now, bytes };
    this.final = tracks;
  }

  report(connected) {
    const tracks = this.final || [];
    let worst = { received: 0, lost: 0 };
    // Audio's jitter where there is audio: a video frame's packets leave in a burst, which
    // reads as jitter nobody sees or hears.
    const jitters = {};
    for (const t of tracks) {
      const lost = Math.max(0, t.packetsLost || 0);
      const received = t.packetsReceived || 0;
      // The larger share lost: lost / (received + lost), compared without dividing.
      if (lost * (worst.received + worst.lost) >= worst.lost * (received + lost)) {
        worst = { received, lost };
      }
      jitters[t.kind] = Math.max(jitters[t.kind] || 0, (t.jitter || 0) * 1000);
    }
    const jitter = jitters.audio ?? jitters.video ?? 0;
    const sorted = [...this.rtts].sort((a, b) => a - b);
    const rtt = sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
    return {
      type: "network_test_report",
      connected,
      rtt_ms: rtt === null ? null : Math.round(rtt * 10) / 10,
      relayed: this.relayed,
      downlink: tracks.length
        ? {
            packets_received: worst.received,
            packets_lost: worst.lost,
            jitter_ms: Math.round(jitter * 10) / 10,
            peak_kbps: Math.round(this.peakKbps * 10) / 10,
          }
        : null,
    };
  }
}

// Run the test for `link` with the call's ICE servers; `stream` is the device check's camera
// and microphone (null when there are none). `onProgress(fraction, sentence)` follows it. Resolves
// with the `network_test_result` frame, or a `refused` one.
export async function testNetwork({ url, link, iceServers, stream, onProgress }) {
  const socket = new Socket(url);
  // The microphone if there is one (its own copy: the preview keeps the original), and the
  // noise picture whatever the camera (the device check shows the camera works).
  const microphone = stream && stream.getAudioTracks().find((t) => t.readyState === "live");
  const sources = [noiseTrack(), microphone ? { track: microphone.clone(), stop() {} } : toneTrack()];
  const tracks = sources.filter(Boolean).map((source) => source.track);
  let pc = null;
  try {
    onProgress(0, "Connecting to the video server…");
    await socket.opened;
    socket.send({ type: "network_test", ...link });
    const ready = await socket.next(["network_test_ready"], 10000);
    if (ready.type === "refused") return ready;
    pc = new RTCPeerConnection({ iceServers, bundlePolicy: "max-bundle" });
    for (const track of tracks) pc.addTrack(track); // one video and one audio track
    pc.onicecandidate = (event) => {
      if (!event.candidate) return;
      socket.send({
        type: "signal",
        kind: "candidate",
        candidate: event.candidate.candidate,
        sdp_mid: event.candidate.sdpMid,
        sdp_mline_index: event.candidate.sdpMLineIndex,
      });
    };
    await pc.setLocalDescription(await pc.createOffer());
    socket.send({ type: "signal", kind: "offer", sdp: pc.localDescription.sdp });
    const answer = await socket.next(["signal"], 10000);
    if (answer.type === "refused") return answer;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    const measures = new Measures();
    const connected = await new Promise((resolve) => {
      const done = (ok) => {
        clearTimeout(timer);
        pc.onconnectionstatechange = null;
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), CONNECT_MS);
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected") done(true);
        else if (pc.connectionState === "failed") done(false);
      };
      if (pc.connectionState === "connected") done(true);
    });
    if (connected) {
      const seconds = Math.max(2, Math.min(10, ready.duration_s));
      for (let s = 0; s < seconds; s += 1) {
        onProgress((s + 1) / (seconds + 1), `Measuring your connection… ${seconds - s} s`);
        await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
        await measures.sample(pc);
      }
    }
    onProgress(1, "Working out the result…");
    socket.send(measures.report(connected));
    return await socket.next(["network_test_result"], 15000);
  } finally {
    if (pc) pc.close();
    for (const source of sources) if (source) source.stop();
    for (const t of tracks) t.stop();
    socket.close();
  }
}
