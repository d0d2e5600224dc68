// Microphones and cameras in the call (docs/web.md, "Mute state"): everyone's state on their
// tile, what this page says of its own (`media_state`), a host's mute (`muted_by_host`) and
// request to unmute (`unmute_requested`), and the host's Mute and "Ask to unmute" buttons.

const SEND_AFTER_MS = 250; // a burst of clicks is sent as its last state
const RETRY_MS = 2000; // after the server said the state changed too often

const SVG = "http://www.w3.org/2000/svg";
const ICONS = {
  // A microphone, and a camera; a stroke across them when off.
  audio: ["M12 3a3 3 0 0 0-3 3v6a3 3 0 0 0 6 0V6a3 3 0 0 0-3-3z", "M6 11a6 6 0 0 0 12 0M12 17v4"],
  video: ["M3 7h12v10H3z", "M15 10l6-3v10l-6-3z"],
};

function icon(kind) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  for (const d of [...ICONS[kind], "M4 20L20 4"]) {
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", d);
    if (d.startsWith("M4 20")) path.setAttribute("class", "strike");
    svg.append(path);
  }
  return svg;
}

function stateText(kind, person) {
  if (kind === "audio") {
    if (person.muted_by_host) return "Microphone off (muted by the host)";
    return person.audio_on ? "Microphone on" : "Microphone off";
  }
  return person.video_on ? "Camera on" : "Camera off";
}

export class Microphones {
  // send(type, fields): a frame to signaling; unmute(): turn this page's microphone on, as
  // its own button does; elements: the notice, the prompt and its text and buttons.
  constructor({ send, unmute, notice, prompt, promptText, promptAccept, promptDismiss }) {
    this.send = send;
    this.unmute = unmute;
    this.notice = notice;
    this.prompt = prompt;
    this.promptText = promptText;
    this.people = new Map(); // participant_id -> { audio_on, video_on, muted_by_host }
    this.own = null; // { audio, video }: what this page last wanted others to see
    this.timer = null;
    promptAccept.addEventListener("click", () => {
      this.closePrompt();
      this.unmute();
    });
    promptDismiss.addEventListener("click", () => this.closePrompt());
  }

  // --- this page's own state ----------------------------------------------------------------

  // The person turned their microphone or camera (or joined the call): tell everyone, once
  // the clicks settle. Turning the microphone on ends a host's mute (only they can).
  report(audio, video) {
    this.own = { audio, video };
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), SEND_AFTER_MS);
    if (audio) {
      this.notice.hidden = true;
      this.notice.textContent = "";
      this.closePrompt();
    }
  }

  flush() {
    this.timer = null;
    if (this.own) this.send("media_state", { audio: this.own.audio, video: this.own.video });
  }

  // An error frame; true if it was about this page's state (it is sent again shortly).
  refused(frame) {
    if (frame.code !== "media_state_rate_limited") return false;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), RETRY_MS);
    return true;
  }

  // The call is over for this page: nothing more to send.
  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.own = null;
    this.people.clear();
    this.notice.hidden = true;
    this.closePrompt();
  }

  // A host muted this page's microphone (the caller has turned its track off).
  mutedByHost(frame) {
    this.closePrompt();
    this.notice.textContent = `The host muted your microphone (${frame.by_name}). Unmute it when you want to speak.`;
    this.notice.hidden = false;
  }

  // A host asks this person to turn their microphone on: only they can, with this button.
  unmuteRequested(frame) {
    this.promptText.textContent = `${frame.by_name} asks you to unmute your microphone.`;
    this.prompt.hidden = false;
    this.prompt.querySelector("button").focus();
  }

  closePrompt() {
    this.prompt.hidden = true;
  }

  // --- everyone's state -----------------------------------------------------------------------

  // From a `participants` or `room` frame.
  update(participants) {
    this.people.clear();
    for (const p of participants) {
      this.people.set(p.participant_id, {
        audio_on: p.audio_on !== false,
        video_on: p.video_on !== false,
        muted_by_host: Boolean(p.muted_by_host),
      });
    }
  }

  // A tile's microphone and camera indicators (icon, with the state as its text alternative).
  decorate(tile, pid) {
    const person = this.people.get(pid);
    const caption = tile.querySelector("figcaption");
    let states = caption.querySelector(".media-state");
    if (!states) {
      states = document.createElement("span");
      states.className = "media-state";
      for (const kind of ["audio", "video"]) {
        const indicator = document.createElement("span");
        indicator.className = `indicator ${kind}`;
        indicator.setAttribute("role", "img");
        indicator.append(icon(kind));
        states.append(indicator);
      }
      caption.insertBefore(states, caption.querySelector(".state"));
    }
    states.hidden = !person;
    if (!person) return;
    for (const kind of ["audio", "video"]) {
      const on = kind === "audio" ? person.audio_on : person.video_on;
      const indicator = states.querySelector(`.${kind}`);
      const text = stateText(kind, person);
      indicator.classList.toggle("off", !on);
      indicator.setAttribute("aria-label", text);
      indicator.title = text;
    }
    tile.dataset.audio = person.audio_on ? "on" : "off";
    tile.dataset.video = person.video_on ? "on" : "off";
    tile.dataset.mutedByHost = String(person.muted_by_host);
  }

  // What a test may read: everyone's state as this page shows it.
  snapshot() {
    return Object.fromEntries(this.people);
  }

  // --- the call manager (hosts) -------------------------------------------------------------

  // Badges for a person in the host's list.
  flags(person) {
    const flags = [];
    if (person.audio_on === false) flags.push(person.muted_by_host ? "muted by host" : "microphone off");
    if (person.video_on === false) flags.push("camera off");
    return flags;
  }

  // The host's button for someone else in the call: Mute while their microphone is on, "Ask
  // to unmute" once it is off (a host can never turn it on for them).
  action(person, makeButton) {
    const name = person.display_name;
    const pid = person.participant_id;
    if (person.audio_on !== false) {
      const b = makeButton("Mute", () => this.send("mute", { participant_id: pid }));
      b.setAttribute("aria-label", `Mute ${name}'s microphone`);
      return b;
    }
    const b = makeButton("Ask to unmute", () => this.send("ask_unmute", { participant_id: pid }));
    b.setAttribute("aria-label", `Ask ${name} to unmute`);
    return b;
  }
}
