// The join page, the waiting room, the call and the host's call manager: one page per link.

import { Connection, ask, linkOfPage, readConfig } from "./signaling.js";
import { Media } from "./media.js";
import { Devices } from "./devices.js";
import { testNetwork } from "./network.js";
import { WaitingRoomTalk } from "./waiting_room.js";
import { KnockAlerts } from "./alerts.js";
import { Microphones } from "./mute.js";
import { ChatPanel } from "./chat.js";
import { ScreenSharing } from "./share.js";
import { RecordingConsent } from "./consent.js";

const config = readConfig();
const $ = (id) => document.getElementById(id);
const SCREENS = ["checking", "rejoining", "refusal", "prejoin", "waiting", "call", "ended"];

// What a test or a curious developer can read; nothing personal.
const observed = (window.antechamber = {
  screen: "checking",
  role: null,
  joinClickedMs: null,
  firstRemoteFrameMs: null,
  participantId: null, // random, per call
  networkVerdict: null, // the pre-call network test's verdict, once it ran
  rejoinedAfterReload: false, // this page took its place back with a kept resume token
  reconnecting: false, // "Reconnecting…" is shown: signaling or media is being brought back
});

const REFUSAL_TITLES = {
  unknown: "This link does not work",
  not_yet_open: "This session is not open yet",
  ended: "This session has ended",
  regenerated: "This link was replaced",
  retired: "This link was replaced",
  sharing_disabled: "Guest links are switched off",
  revoked: "This link no longer works",
  plan_not_included: "Not available",
  clinic_suspended: "Not available",
  rate_limited: "Too many attempts",
  room_locked: "The room is locked",
  room_full: "The call is full",
  resume_expired: "Your place has lapsed",
  seat_lapsed: "Your place has lapsed",
  links_unavailable: "Please try again shortly",
  media_unavailable: "Please try again shortly",
};

const WAITING_TITLES = {
  waiting_for_host: "Waiting for the host",
  host_notified: "The host has been notified",
  on_hold: "On hold",
  room_full: "The call is full right now",
  sent_back: "Back in the waiting room",
};

const localTime = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
const clockTime = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });

function show(screen) {
  for (const name of SCREENS) $(name).hidden = name !== screen;
  observed.screen = screen;
  // Move focus to the new screen's heading, so keyboard and screen reader users follow.
  const heading = $(screen).querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

let toastTimer = null;
function toast(text) {
  $("toast").textContent = text;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => ($("toast").textContent = ""), 6000);
}

// A confirmation with an optional message; resolves to the message, or null if cancelled.
function confirmWithMessage(title, text, okLabel, defaultMessage = "") {
  const dialog = $("dialog");
  $("dialog-title").textContent = title;
  $("dialog-text").textContent = text;
  $("dialog-ok").textContent = okLabel;
  $("dialog-message").value = defaultMessage;
  dialog.returnValue = "cancel";
  dialog.showModal();
  $("dialog-message").focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" ? $("dialog-message").value.trim() : null),
      { once: true },
    );
  });
}

// --- before joining -----------------------------------------------------------------------

const link = linkOfPage(window.location);
let role = null;

// This person's place in the call, kept in the tab's sessionStorage (gone when the tab closes)
// under a digest of the link's address (not the link itself), so that a reload comes back with
// the resume token instead of joining (and knocking) again. `until`: when the rejoin grace
// would run out had the page gone now; renewed while the page lives.
const PLACE_RENEW_MS = 15000;
let PLACE_KEY = null; // set by placeKey() before anything is read or kept
async function placeKey() {
  const address = new TextEncoder().encode(`${window.location.pathname}${window.location.search}`);
  try {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", address));
    PLACE_KEY = `antechamber.place:${Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  } catch {
    PLACE_KEY = null; // no digest on an insecure page (no camera there either): nothing kept
  }
}
const place = {
  read() {
    if (!PLACE_KEY) return null;
    try {
      const kept = JSON.parse(sessionStorage.getItem(PLACE_KEY) || "null");
      return kept && typeof kept.resume === "string" && kept.until > Date.now() ? kept : null;
    } catch {
      return null;
    }
  },
  keep(fields) {
    if (!PLACE_KEY) return;
    try {
      const kept = JSON.parse(sessionStorage.getItem(PLACE_KEY) || "null") || {};
      sessionStorage.setItem(PLACE_KEY, JSON.stringify({ ...kept, ...fields }));
    } catch {
      // storage switched off or full: a reload joins from the link again
    }
  },
  forget() {
    if (!PLACE_KEY) return;
    try {
      sessionStorage.removeItem(PLACE_KEY);
    } catch {
      // nothing was kept
    }
  },
};
let reopenTimer = null;

function refuse(frame) {
  $("refusal-title").textContent = REFUSAL_TITLES[frame.reason] || "You cannot join right now";
  $("refusal-message").textContent = frame.warning
    ? `${frame.message} ${frame.warning}`
    : frame.message;
  $("refusal-local").textContent = "";
  $("refusal-next").textContent = "";
  $("refusal-retry").hidden = true;
  if (frame.opens_at) {
    const opens = new Date(frame.opens_at);
    $("refusal-local").textContent = `In your time zone: ${localTime.format(opens)}.`;
    $("refusal-next").textContent = "This page lets you in by itself when it opens.";
    clearTimeout(reopenTimer);
    const wait = Math.min(Math.max(opens - Date.now() + 1000, 1000), 2 ** 31 - 1);
    reopenTimer = setTimeout(check, wait);
  } else if (frame.replaced_by_hint) {
    $("refusal-next").textContent = frame.replaced_by_hint;
  }
  const retryable = ["rate_limited", "links_unavailable", "media_unavailable", "seat_lapsed"];
  if (retryable.includes(frame.reason)) {
    $("refusal-retry").hidden = false;
  }
  show("refusal");
}

// The room's title as the practitioner chose it, above every screen from the join page on.
// Not in document.title: that would keep it in the browser's history.
function showRoomTitle(title) {
  if (!title) return;
  $("room-title").textContent = title;
  $("room-title").hidden = false;
}

// `note`: a sentence for the join page, e.g. why a kept place could not be taken back.
async function check(note = "") {
  if (!link) {
    refuse({ reason: "unknown", message: "This address is not a link to a video session." });
    return;
  }
  show("checking");
  let answer;
  try {
    answer = await ask(config.signaling_url, { type: "check", ...link });
  } catch {
    refuse({
      reason: "links_unavailable",
      message: "The video service cannot be reached right now. Check your connection.",
    });
    return;
  }
  if (answer.type !== "link_ready") {
    refuse(answer);
    return;
  }
  role = answer.role;
  observed.role = role;
  showRoomTitle(answer.room_title);
  $("prejoin-title").textContent =
    role === "host" ? "Join as the host" : "Join the video session";
  $("join-button").textContent = role === "host" ? "Join as host" : "Join";
  const notes = [note, answer.warning].filter(Boolean).join(" ");
  $("prejoin-note").hidden = !notes;
  $("prejoin-note").textContent = notes;
  show("prejoin");
  devices.start();
}

const devices = new Devices({
  preview: $("preview"),
  status: $("device-status"),
  level: $("mic-level"),
  camera: $("camera"),
  microphone: $("microphone"),
});

$("refusal-retry").addEventListener("click", () => check());

// --- the pre-call network test --------------------------------------------------------------

const VERDICT_CLASSES = { good: "good", may_be_choppy: "choppy", video_will_not_work: "bad" };

function percent(direction) {
  if (!direction) return null;
  const all = direction.packets_received + direction.packets_lost;
  return all ? `${Math.round((1000 * direction.packets_lost) / all) / 10}%` : null;
}

function figures(result) {
  const parts = [];
  if (result.rtt_ms !== null) parts.push(`round trip ${Math.round(result.rtt_ms)} ms`);
  const up = percent(result.uplink);
  const down = percent(result.downlink);
  if (up !== null || down !== null) parts.push(`lost: ${up ?? "?"} sending, ${down ?? "?"} receiving`);
  if (result.uplink) parts.push(`sending up to ${(result.uplink.peak_kbps / 1000).toFixed(1)} Mbit/s`);
  if (result.relayed) parts.push("through a relay server");
  return parts.length ? `Measured: ${parts.join("; ")}.` : "";
}

async function runNetworkTest() {
  const button = $("network-test");
  const progress = $("network-progress");
  button.disabled = true;
  progress.hidden = false;
  progress.value = 0;
  $("network-verdict").className = "verdict";
  $("network-verdict").textContent = "Testing your connection…";
  $("network-advice").replaceChildren();
  $("network-figures").textContent = "";
  observed.networkVerdict = null;
  let result;
  try {
    await devices.settled.catch(() => {});
    result = await testNetwork({
      url: config.signaling_url,
      link,
      iceServers: config.ice_servers,
      stream: devices.stream,
      onProgress: (fraction, step) => {
        progress.value = fraction;
        $("network-step").textContent = step;
      },
    });
  } catch (error) {
    result = { type: "refused", message: `The test could not finish: ${error.message}. Try again.` };
  }
  progress.hidden = true;
  $("network-step").textContent = "";
  if (result.type === "network_test_result") {
    observed.networkVerdict = result.verdict;
    $("network-verdict").className = `verdict ${VERDICT_CLASSES[result.verdict] || ""}`;
    $("network-verdict").textContent = result.headline;
    $("network-advice").replaceChildren(
      ...result.advice.map((sentence) => {
        const item = document.createElement("li");
        item.textContent = sentence;
        return item;
      }),
    );
    $("network-figures").textContent = figures(result);
  } else {
    observed.networkVerdict = "not_tested";
    $("network-verdict").textContent = result.message || "The test could not run. Try again.";
  }
  button.textContent = "Test again";
  button.disabled = false;
}

$("network-test").addEventListener("click", () => runNetworkTest());

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  if (!name) {
    $("join-error").textContent = "Please type your name, so the host knows who you are.";
    $("name").setAttribute("aria-invalid", "true");
    $("name").focus();
    return;
  }
  $("name").removeAttribute("aria-invalid");
  $("join-error").textContent = "";
  observed.joinClickedMs = performance.now();
  call.join(name);
});

// --- in the room --------------------------------------------------------------------------

class Call {
  constructor() {
    this.connection = null;
    this.media = null;
    this.me = null; // participant_id
    this.resume = null;
    this.graceMs = 0;
    this.deadline = null; // while the connection is down: when the place lapses (ms)
    this.retrying = false;
    this.wake = null; // ends the drop loop's current wait early (the network is back)
    this.offline = false; // the browser says there is no network
    this.renewTimer = null;
    this.names = new Map();
    this.away = new Set(); // participant_ids whose connection dropped (signaling's `disconnected`)
    this.tiles = new Map();
    this.quality = new Map(); // participant_id -> latest network quality (hosts: all; guests: own)
    this.recording = false;
    this.room = null;
    this.stream = null;
    this.chat = new ChatPanel({ send: (text) => this.connection.send("chat", { text }) });
    this.screens = new ScreenSharing({ send: (type, fields) => this.connection.send(type, fields), toast });
  }

  async join(name) {
    $("join-button").disabled = true;
    this.stream = await devices.handOver();
    if (this.stream) {
      for (const t of this.stream.getAudioTracks()) t.enabled = !$("join-muted").checked;
      for (const t of this.stream.getVideoTracks()) t.enabled = !$("join-camera-off").checked;
    }
    this.prepare();
    try {
      await this.connection.open({ type: "join", ...link, name });
    } catch {
      $("join-button").disabled = false;
      $("join-error").textContent =
        "The video service cannot be reached right now. Check your connection and try again.";
    }
  }

  prepare() {
    this.media = new Media({
      iceServers: config.ice_servers,
      send: (fields) => this.connection.send("signal", fields),
      onRemote: (people) => this.showRemote(people),
      onFailed: (sentence) => {
        this.reconnecting(false);
        toast(sentence);
      },
      onState: (state) => this.reconnecting(state === "reconnecting"),
      screen: () => this.screens.track(),
      onScreen: (track) => this.screens.arrived(track),
    });
    this.connection = new Connection(config.signaling_url, {
      onFrame: (frame) => this.on(frame),
      // 4001: signaling replaced this socket with a newer one of the same person (the call
      // opened in a duplicated tab): resuming here would take it back, and so on for ever.
      onDrop: (event) => (event && event.code === 4001 ? this.replaced() : this.dropped()),
    });
  }

  // The page was reloaded (or opened again in the same tab) during a call: take the kept
  // place back with its resume token, with the same camera and microphone, without the join
  // page. The browser remembers the camera permission, so nothing needs a click.
  async rejoin(kept) {
    show("rejoining");
    observed.rejoinedAfterReload = true;
    this.resume = kept.resume;
    this.graceMs = kept.grace_ms || 0;
    this.deadline = kept.until;
    devices.prefer(kept.camera, kept.microphone);
    await devices.acquire().catch(() => {});
    this.stream = await devices.handOver();
    if (this.stream) {
      for (const t of this.stream.getAudioTracks()) t.enabled = !kept.muted;
      for (const t of this.stream.getVideoTracks()) t.enabled = !kept.camera_off;
    }
    this.prepare();
    this.dropped(0);
  }

  // "Reconnecting…" on the page while signaling or media is being brought back.
  reconnecting(on) {
    const state = on || this.deadline !== null || this.offline;
    observed.reconnecting = state;
    for (const [id, place] of [["call-state", "in the call"], ["waiting-state", "in the waiting room"]]) {
      $(id).hidden = !state;
      $(id).textContent = state ? `Reconnecting… your place ${place} is kept.` : "";
    }
  }

  // What a reload needs to take this place back, renewed while the page lives.
  keepPlace(fields = {}) {
    if (!this.resume || this.graceMs <= 0) return;
    const until = this.deadline || Date.now() + this.graceMs; // while dropped: the drop's own
    place.keep({ resume: this.resume, grace_ms: this.graceMs, until, ...fields });
  }

  on(frame) {
    const handler = this[`on_${frame.type}`];
    if (handler) handler.call(this, frame);
  }

  on_welcome(frame) {
    this.me = frame.participant_id;
    observed.participantId = frame.participant_id;
    this.resume = frame.resume_token;
    this.graceMs = frame.rejoin_grace_s * 1000;
    this.deadline = null;
    this.reconnecting(false);
    const devicesInUse = this.stream ? streamDevices(this.stream) : {};
    this.keepPlace({ participant_id: frame.participant_id, ...devicesInUse });
    clearInterval(this.renewTimer);
    this.renewTimer = setInterval(() => this.keepPlace(), PLACE_RENEW_MS);
    $("manager").hidden = frame.role !== "host";
    showRoomTitle(frame.room_title);
    this.chat.welcome(frame);
    this.screens.welcome(frame);
    talk.welcome(frame);
    if (frame.warning) toast(frame.warning);
  }

  on_waiting(frame) {
    if (frame.state === "sent_back") this.sentBack();
    $("waiting-title").textContent = WAITING_TITLES[frame.state] || "Waiting room";
    $("waiting-message").textContent = frame.message;
    if (observed.screen !== "waiting") show("waiting");
  }

  // A host sent this person back to the waiting room: their media stops (the node released
  // their seat), the call's tiles go; an admit brings a new `admitted` and media again.
  sentBack() {
    if (this.media) this.media.stop();
    for (const tile of this.tiles.values()) tile.remove();
    this.tiles.clear();
    if ($("tile-me")) $("tile-me").remove();
    this.screens.finish(); // a share went with their place in the call
  }

  on_waiting_message(frame) {
    talk.received(frame);
  }

  on_admitted() {
    if (observed.screen !== "call") show("call");
    this.showLocal();
    syncControls(this.stream);
    // Asked to consent to a recording and not answered yet: media connects after the answer.
    consent
      .answered()
      .then(() => this.media.start(this.stream))
      .catch((error) => {
        console.warn("the media connection could not start", error);
        toast("Your camera and microphone could not be connected to the call.");
      });
  }

  on_signal(frame) {
    this.media.received(frame);
  }

  on_participants(frame) {
    this.away.clear();
    for (const p of frame.participants) {
      this.names.set(p.participant_id, p.display_name);
      if (p.disconnected) this.away.add(p.participant_id);
    }
    microphones.update(frame.participants);
    for (const [pid, tile] of this.tiles) this.label(pid, tile);
    if ($("tile-me")) microphones.decorate($("tile-me"), this.me);
  }

  // A host muted this page's microphone: it goes off here too (the media node forwards none
  // of it anyway), and the person is told.
  on_muted_by_host(frame) {
    for (const t of this.stream ? this.stream.getAudioTracks() : []) t.enabled = false;
    syncControls(this.stream);
    microphones.mutedByHost(frame);
  }

  on_unmute_requested(frame) {
    microphones.unmuteRequested(frame);
  }

  // A tile's caption: the person's name, and "reconnecting…" while their connection is down.
  label(pid, tile) {
    tile.querySelector("figcaption .name").textContent = this.names.get(pid) || "Guest";
    const away = this.away.has(pid);
    tile.classList.toggle("away", away);
    tile.querySelector("figcaption .state").textContent = away ? "reconnecting…" : "";
    microphones.decorate(tile, pid);
  }

  // Network quality from the media node, every few seconds while it changes: a host gets
  // everyone in the call, a guest only themselves. Signal bars on each tile, figures as text.
  on_quality(frame) {
    for (const q of frame.participants) this.quality.set(q.participant_id, q);
    for (const [pid, tile] of this.tiles) showQuality(tile, this.quality.get(pid));
    if ($("tile-me")) showQuality($("tile-me"), this.quality.get(this.me), true);
  }

  on_room(frame) {
    this.room = frame;
    talk.room(frame);
    knockAlerts.update(frame);
    this.on_participants(frame);
    renderManager(frame, this.me, this.recording);
  }

  on_knock(frame) {
    const text = `${frame.display_name} is waiting to join.`;
    $("alerts").textContent = text;
    $("alerts").dataset.participantId = frame.participant_id;
    toast(text);
  }

  on_seat_refused(frame) {
    $("alerts").textContent = frame.message;
  }

  on_recording(frame) {
    this.recording = frame.on;
    $("recording").hidden = !frame.on;
    toast(frame.message);
    if (this.room) renderManager(this.room, this.me, this.recording);
  }

  on_chat(frame) {
    this.chat.received(frame);
  }

  on_consent_request(frame) {
    consent.request(frame);
  }

  on_consent_closed(frame) {
    consent.closed(frame);
  }

  on_consent_state(frame) {
    consent.state(frame);
    if (this.room) renderManager(this.room, this.me, this.recording);
  }

  on_screen_share(frame) {
    this.screens.received(frame);
  }

  on_error(frame) {
    if (talk.refused(frame)) return; // shown by its form
    if (microphones.refused(frame)) return; // sent again shortly
    if (this.chat.refused(frame)) return; // shown by the chat box
    if (this.screens.refused(frame)) return; // the picked screen is let go
    if (consent.refused(frame)) return; // said by the consent module
    toast(frame.message);
  }

  on_refused(frame) {
    this.finish();
    if (frame.reason === "resume_expired") {
      // The kept place is gone (the grace ran out, or the call ended): the join page again.
      check("Your place in the call has lapsed; join again.");
      return;
    }
    refuse(frame);
  }

  on_denied(frame) {
    this.end("You were not let in", frame.message);
  }

  on_removed(frame) {
    this.end("You were removed from the call", frame.message);
  }

  on_ended(frame) {
    this.end("The session has ended", frame.message);
  }

  leave() {
    this.connection.send("leave");
    this.end("You left the call", "The others can carry on without you.");
  }

  end(title, message) {
    this.finish();
    $("ended-title").textContent = title;
    $("ended-message").textContent = message;
    $("rejoin").href = window.location.href;
    $("recording").hidden = true;
    show("ended");
  }

  // The place is over (left, ended, denied, removed, refused): nothing of it is kept.
  finish() {
    place.forget();
    clearInterval(this.renewTimer);
    this.resume = null;
    this.deadline = null;
    this.reconnecting(false);
    if (this.connection) this.connection.finish();
    if (this.media) this.media.stop();
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
    microphones.stop();
    consent.finish();
    this.screens.finish();
    knockAlerts.stop();
    for (const tile of this.tiles.values()) tile.remove();
    this.tiles.clear();
    if ($("tile-me")) $("tile-me").remove();
    $("join-button").disabled = false;
    devices.stop();
  }

  replaced() {
    this.end("You are in this call in another tab", "The call carries on there; this page stopped.");
  }

  // A drop that was not an ending: come back with the resume token, with back-off, until the
  // place would lapse (one loop at a time: a failed attempt's own close lands here too).
  async dropped(firstDelay = 500) {
    if (this.retrying) return;
    if (!this.resume || this.graceMs <= 0) {
      if (this.me === null) return; // never joined: the join page says what went wrong
      this.end("The connection was lost", "Open your link again to rejoin.");
      return;
    }
    this.deadline = this.deadline || Date.now() + this.graceMs;
    this.reconnecting(true);
    if (this.media) this.media.stop();
    this.retrying = true;
    try {
      for (let delay = firstDelay; Date.now() < this.deadline; delay = Math.min(Math.max(delay * 2, 500), 8000)) {
        await new Promise((r) => {
          this.wake = r;
          setTimeout(r, delay);
        });
        this.wake = null;
        try {
          await this.connection.open({ type: "join", resume: this.resume });
          return; // `welcome` ends the drop; a close before it comes back here
        } catch {
          // not back yet
        }
      }
    } finally {
      this.retrying = false;
    }
    this.end("The connection was lost", "Your place has lapsed; open your link again to rejoin.");
  }

  // The browser lost its network (`offline`) or has it back (`online`, perhaps another one):
  // say so at once, and on its return try at once rather than at the end of a back-off.
  networkChanged(online) {
    this.offline = !online;
    if (!this.resume) return; // not in a call or a waiting room
    this.reconnecting(false);
    if (!online) return;
    if (this.wake) this.wake();
    else if (this.media) this.media.renew();
  }

  showLocal() {
    if ($("tile-me")) return;
    const tile = makeTile("tile-me", "You", true);
    tile.querySelector("video").srcObject = this.stream || null;
    showQuality(tile, this.quality.get(this.me), true);
    microphones.decorate(tile, this.me);
    $("grid").prepend(tile);
  }

  showRemote(people) {
    for (const [pid, tracks] of people) {
      let tile = this.tiles.get(pid);
      if (!tile) {
        tile = makeTile(`tile-${pid}`, this.names.get(pid) || "Guest", false);
        this.tiles.set(pid, tile);
        this.label(pid, tile);
        showQuality(tile, this.quality.get(pid));
        $("grid").append(tile);
        watchFirstFrame(tile.querySelector("video"));
      }
      const video = tile.querySelector("video");
      const current = video.srcObject ? video.srcObject.getTracks() : [];
      const same = current.length === tracks.length && tracks.every((t) => current.includes(t));
      if (!same) video.srcObject = new MediaStream(tracks);
    }
    for (const [pid, tile] of this.tiles) {
      if (!people.has(pid)) {
        tile.remove();
        this.tiles.delete(pid);
      }
    }
    $("grid").dataset.count = String(this.tiles.size + 1);
  }
}

function makeTile(id, name, local) {
  const tile = document.createElement("figure");
  tile.id = id;
  tile.className = local ? "tile local" : "tile remote";
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = local; // our own sound never plays back
  const caption = document.createElement("figcaption");
  const who = span("name", name);
  const state = span("state", ""); // "reconnecting…" while their connection is down
  state.setAttribute("role", "status");
  const signal = span("signal", ""); // network quality bars, once measured (showQuality)
  signal.setAttribute("role", "img");
  signal.hidden = true;
  for (let bar = 0; bar < 5; bar++) signal.append(span("signal-bar", ""));
  caption.append(who, signal, state);
  video.setAttribute("aria-label", local ? "Your video" : `Video of ${name}`);
  tile.append(video, caption);
  if (local) {
    const note = document.createElement("p"); // said once when your own connection turns poor
    note.className = "quality-note";
    note.setAttribute("role", "status");
    tile.append(note);
  }
  return tile;
}

const GRADES = { 5: "excellent", 4: "good", 3: "fair", 2: "poor", 1: "bad" };

// One direction's figures, e.g. "2.5% lost, jitter 12 ms" (what was measured).
function directionText(d) {
  const parts = [];
  if (d.loss_pct !== null) parts.push(`${d.loss_pct}% lost`);
  if (d.jitter_ms !== null) parts.push(`jitter ${Math.round(d.jitter_ms)} ms`);
  return parts.join(", ");
}

function qualityText(q) {
  const details = [];
  if (q.rtt_ms !== null) details.push(`round trip ${Math.round(q.rtt_ms)} ms`);
  const sending = directionText(q.sending);
  const receiving = directionText(q.receiving);
  if (sending) details.push(`sending: ${sending}`);
  if (receiving) details.push(`receiving: ${receiving}`);
  return `Connection ${GRADES[q.grade]}, ${q.grade} of 5${details.length ? `. ${details.join("; ")}` : ""}`;
}

// A tile's signal bars: as many filled as the grade, the figures as their text alternative.
function showQuality(tile, q, own = false) {
  const signal = tile.querySelector(".signal");
  const measured = Boolean(q && q.grade);
  signal.hidden = !measured;
  if (own) {
    const poor = measured && q.grade <= 2;
    tile.querySelector(".quality-note").textContent = poor ? "Your connection is poor" : "";
  }
  if (!measured) return;
  signal.dataset.grade = String(q.grade);
  const text = qualityText(q);
  signal.setAttribute("aria-label", text);
  signal.title = text;
}

function watchFirstFrame(video) {
  const seen = () => {
    if (observed.firstRemoteFrameMs === null) observed.firstRemoteFrameMs = performance.now();
    video.dataset.firstFrameMs = String(Math.round(performance.now()));
  };
  if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(seen);
  else video.addEventListener("loadeddata", seen, { once: true });
}

// --- the call manager (hosts) ---------------------------------------------------------------

function button(label, onClick, className = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

// A list item for one person, with their id, name and flags; actions are added by the caller.
function personItem(participantId, name, flags) {
  const item = document.createElement("li");
  item.dataset.participantId = participantId;
  item.append(span("who", name), " ", ...flags.map((flag) => span(`badge ${flag.replaceAll(" ", "-")}`, flag)));
  return item;
}

function renderManager(room, me, recording) {
  const waiting = $("waiting-list");
  waiting.replaceChildren(
    ...room.waiting.map((guest) => {
      const flags = [];
      if (guest.muted) flags.push("muted knock");
      if (guest.on_hold) flags.push("on hold");
      if (guest.disconnected) flags.push("disconnected");
      const item = personItem(guest.participant_id, guest.display_name, flags);
      item.insertBefore(span("muted", `since ${clockTime.format(new Date(guest.waiting_since))}`), item.children[1] || null);
      const name = guest.display_name;
      const actions = document.createElement("span");
      actions.className = "actions";
      actions.append(
        button("Admit", () => call.connection.send("admit", { participant_id: guest.participant_id }), "primary"),
        talk.guestAction(guest, button),
        button("Hold", async () => {
          const message = await confirmWithMessage(
            `Put ${name} on hold?`,
            "They keep waiting and see your message.",
            "Put on hold",
            "The host will be with you shortly.",
          );
          if (message !== null) call.connection.send("hold", { participant_id: guest.participant_id, message });
        }),
        button("Deny", async () => {
          const message = await confirmWithMessage(
            `Turn ${name} away?`,
            "They see your message and leave the waiting room.",
            "Deny entry",
          );
          if (message !== null) call.connection.send("deny", { participant_id: guest.participant_id, message });
        }, "danger"),
      );
      for (const b of actions.children) b.setAttribute("aria-label", `${b.textContent} ${name}`);
      item.append(actions);
      return item;
    }),
  );
  const alerted = $("alerts").dataset.participantId;
  if (alerted && !room.waiting.some((guest) => guest.participant_id === alerted)) {
    $("alerts").textContent = ""; // the knock was answered
    delete $("alerts").dataset.participantId;
  }
  $("waiting-count").textContent = String(room.waiting.length);
  $("waiting-empty").hidden = room.waiting.length > 0;
  $("knocks-state").textContent = room.knocks_muted
    ? "New knocks are muted: they are listed without an alert."
    : "New knocks alert you.";
  $("knocks-toggle").textContent = room.knocks_muted ? "Unmute knocks" : "Mute knocks";

  const present = $("participant-list");
  present.replaceChildren(
    ...room.participants.map((person) => {
      const flags = [];
      if (person.role === "host") flags.push("host");
      if (person.disconnected) flags.push("disconnected");
      flags.push(...microphones.flags(person));
      const you = person.participant_id === me;
      const item = personItem(person.participant_id, you ? `${person.display_name} (you)` : person.display_name, flags);
      if (person.participant_id !== me) {
        const remove = button("Remove", async () => {
          const message = await confirmWithMessage(
            `Remove ${person.display_name} from the call?`,
            "They see your message and leave the call.",
            "Remove",
          );
          if (message !== null) call.connection.send("remove", { participant_id: person.participant_id, message });
        }, "danger");
        remove.setAttribute("aria-label", `Remove ${person.display_name}`);
        const actions = document.createElement("span");
        actions.className = "actions";
        actions.append(microphones.action(person, button), remove);
        const back = talk.participantAction(person, button);
        if (back) remove.before(back);
        item.append(actions);
      }
      return item;
    }),
  );
  $("participant-count").textContent = `${room.participants.length} of ${room.max_participants}`;
  $("lock").textContent = room.locked ? "Unlock the room" : "Lock the room";
  $("lock").setAttribute("aria-pressed", String(room.locked));
  $("record").textContent = recording
    ? "Stop recording"
    : consent.asking
      ? "Withdraw the request to record"
      : "Start recording";
  $("record").setAttribute("aria-pressed", String(recording));
}

const call = new Call();
const talk = new WaitingRoomTalk({
  send: (type, fields) => call.connection && call.connection.send(type, fields),
  confirm: confirmWithMessage,
});
const knockAlerts = new KnockAlerts();
const consent = new RecordingConsent({
  send: (type, fields) => call.connection && call.connection.send(type, fields),
  toast,
  dialog: $("consent-dialog"),
  question: $("consent-question"),
  consentButton: $("consent-give"),
  declineButton: $("consent-decline"),
  panel: $("consent-panel"),
  panelTitle: $("consent-panel-title"),
  panelStatus: $("consent-status"),
  lists: { consented: $("consent-consented"), declined: $("consent-declined"), pending: $("consent-pending") },
});
const microphones = new Microphones({
  send: (type, fields) => call.connection && call.connection.send(type, fields),
  unmute: () => setMicrophone(true),
  notice: $("mute-notice"),
  prompt: $("unmute-prompt"),
  promptText: $("unmute-prompt-text"),
  promptAccept: $("unmute-accept"),
  promptDismiss: $("unmute-dismiss"),
});
observed.mediaStates = () => microphones.snapshot();
observed.voices = () => (call.media ? call.media.voices() : Promise.resolve({}));
observed.mediaConnections = () => (call.media ? call.media.connections : 0);
window.addEventListener("offline", () => call.networkChanged(false));
window.addEventListener("online", () => call.networkChanged(true));

$("knocks-toggle").addEventListener("click", () => {
  call.connection.send(call.room && call.room.knocks_muted ? "unmute_knocks" : "mute_knocks");
});
$("lock").addEventListener("click", () => {
  call.connection.send(call.room && call.room.locked ? "unlock" : "lock");
});
$("record").addEventListener("click", () => {
  // Stop recording, or withdraw a request that still waits for answers (stop_recording too).
  call.connection.send(call.recording || consent.asking ? "stop_recording" : "start_recording");
});
$("end-all").addEventListener("click", async () => {
  const message = await confirmWithMessage(
    "End the meeting for everyone?",
    "Everyone in the call and in the waiting room is disconnected.",
    "End for all",
  );
  if (message !== null) call.connection.send("end_for_all", { message });
});
$("leave").addEventListener("click", () => call.leave());
$("waiting-leave").addEventListener("click", () => call.leave());

function syncControls(stream) {
  const audio = stream ? stream.getAudioTracks() : [];
  const video = stream ? stream.getVideoTracks() : [];
  const muted = !audio.some((t) => t.enabled);
  const off = !video.some((t) => t.enabled);
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute" : "Mute";
  $("mute").disabled = audio.length === 0;
  $("camera-toggle").setAttribute("aria-pressed", String(off));
  $("camera-toggle").textContent = off ? "Start camera" : "Stop camera";
  $("camera-toggle").disabled = video.length === 0;
  call.keepPlace({ muted, camera_off: off }); // a reload comes back as it was
  microphones.report(!muted, !off); // everyone in the call sees it
}

function setMicrophone(on) {
  for (const t of call.stream ? call.stream.getAudioTracks() : []) t.enabled = on;
  syncControls(call.stream);
}

// The camera and microphone a stream uses, for a reload to ask for the same.
function streamDevices(stream) {
  const [video] = stream.getVideoTracks();
  const [audio] = stream.getAudioTracks();
  return {
    camera: video ? video.getSettings().deviceId || "" : "",
    microphone: audio ? audio.getSettings().deviceId || "" : "",
  };
}

$("mute").addEventListener("click", () => {
  const tracks = call.stream ? call.stream.getAudioTracks() : [];
  setMicrophone(!tracks.some((t) => t.enabled));
});
$("camera-toggle").addEventListener("click", () => {
  const tracks = call.stream ? call.stream.getVideoTracks() : [];
  const off = tracks.some((t) => t.enabled);
  for (const t of tracks) t.enabled = !off;
  syncControls(call.stream);
});

// Closing or reloading the page is a drop, not a leave (a page cannot tell the two apart):
// the place is kept for the rejoin grace, and a reload takes it back. Leave is the button.
placeKey().then(() => {
  const kept = link ? place.read() : null;
  if (kept) call.rejoin(kept);
  else check();
});
