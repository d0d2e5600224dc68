// One peer connection to the media node that holds this person's seat (docs/media.md).
//
// The first offer is ours and carries what we publish; after that the node offers whenever
// what we should receive changes, with `streams` saying whose media each of its mids
// carries, and we answer. Candidates trickle to the node as `signal` frames; the node's
// descriptions carry all of its own.
//
// A connection that ICE reports disconnected for DISCONNECTED_WAIT_MS, or failed, or that the
// node says it lost, is replaced by a new one (a fresh offer: the node keeps the seat, and the
// others keep receiving this person on the same m-lines), with back-off, at most
// RESTART_DELAYS_MS.length times in a row.

const DISCONNECTED_WAIT_MS = 3000; // ICE often comes back by itself within this
const CONNECT_WAIT_MS = 10000; // a new connection not up by then counts as failed
const RESTART_DELAYS_MS = [0, 1000, 2000, 4000, 8000, 8000];
// The node's reasons for a `bye` that a new connection can mend (docs/media.md).
const RECOVERABLE = ["connection_lost", "connect_timeout", "media_timeout", "server_error", "sdp_invalid"];

export class Media {
  constructor({
    iceServers,
    send,
    onRemote,
    onFailed,
    onState = () => {},
    screen = () => null,
    onScreen = () => {},
  }) {
    this.iceServers = iceServers;
    this.send = send; // (fields) => a `signal` frame to signaling
    this.onRemote = onRemote; // (Map participant_id -> MediaStreamTrack[]) on every change
    this.onFailed = onFailed; // (sentence) when the connection cannot go on
    this.onState = onState; // ("connecting" | "connected" | "reconnecting") on every change
    this.screen = screen; // () => this page's screen track while it shares (share.js), or null
    this.onScreen = onScreen; // (track | null, participant_id | null): the call's screen share
    this.kinds = new Map(); // mid -> "audio" | "video" | "screen"
    this.pc = null;
    this.owners = new Map(); // mid -> participant_id
    this.queue = Promise.resolve();
    this.localStream = null;
    this.restarts = 0; // in a row, since the last time the connection was up
    this.timer = null;
    this.active = false; // between start() and stop()
    this.connections = 0; // peer connections made: read by tests
  }

  // A new connection for the call (after `admitted`): the count of restarts starts again.
  start(localStream) {
    this.localStream = localStream;
    this.restarts = 0;
    this.active = true;
    this.onState("connecting");
    return this.connect();
  }

  // The connection is gone or going: a new one after the next delay, or the end of trying.
  restart() {
    if (!this.active) return;
    clearTimeout(this.timer);
    if (this.restarts >= RESTART_DELAYS_MS.length) {
      this.stop();
      this.onFailed("The video connection could not be restored. Check your network, then rejoin.");
      return;
    }
    const delay = RESTART_DELAYS_MS[this.restarts];
    this.restarts += 1;
    this.onState("reconnecting");
    this.timer = setTimeout(() => {
      this.connect().catch((error) => {
        console.warn("the media connection could not start again", error);
        this.restart();
      });
    }, delay);
  }

  // The network is back or changed (the browser's `online`): the old connection's path may
  // be gone, so a new connection at once, with the back-off starting again.
  renew() {
    if (!this.active) return;
    this.restarts = 0;
    this.restart();
  }

  async connect() {
    this.close();
    this.connections += 1;
    const localStream = this.localStream;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;
    this.owners.clear();
    this.learned = false; // until the node says whose media its mids carry, tiles stay as they are
    const tracks = localStream ? localStream.getTracks() : [];
    for (const track of tracks) pc.addTrack(track, localStream);
    for (const kind of ["audio", "video"]) {
      if (!tracks.some((t) => t.kind === kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    }
    pc.onicecandidate = ({ candidate }) => {
      if (pc !== this.pc || !candidate || !candidate.candidate) return;
      this.send({
        kind: "candidate",
        candidate: candidate.candidate,
        sdp_mid: candidate.sdpMid,
        sdp_mline_index: candidate.sdpMLineIndex,
      });
    };
    pc.ontrack = () => this.report();
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const state = pc.connectionState;
      if (state === "connected") {
        clearTimeout(this.timer);
        this.restarts = 0;
        this.onState("connected");
      } else if (state === "failed") {
        this.restart();
      } else if (state === "disconnected") {
        clearTimeout(this.timer);
        this.onState("reconnecting");
        this.timer = setTimeout(() => pc === this.pc && this.restart(), DISCONNECTED_WAIT_MS);
      }
    };
    this.timer = setTimeout(() => pc === this.pc && this.restart(), CONNECT_WAIT_MS);
    try {
      await pc.setLocalDescription(await pc.createOffer());
    } catch (error) {
      if (pc !== this.pc) return; // replaced meanwhile: nothing to restart
      throw error;
    }
    // A fresh `admitted` (the call moved to another media node) may have replaced this
    // connection while its offer was made: that offer must not reach the new node.
    if (pc !== this.pc) return;
    this.send({ kind: "offer", sdp: pc.localDescription.sdp });
  }

  // The node's signals, one at a time and in order.
  received(frame) {
    this.queue = this.queue.then(() => this.apply(frame)).catch((error) => {
      console.warn("a signal from the media node could not be applied", error);
    });
    return this.queue;
  }

  async apply(frame) {
    const pc = this.pc;
    if (!pc) return;
    if (frame.kind === "bye") {
      if (RECOVERABLE.includes(frame.reason)) {
        this.restart();
        return;
      }
      this.stop();
      this.onFailed(frame.message || "The video connection was closed.");
      return;
    }
    if (frame.kind !== "offer" && frame.kind !== "answer") return;
    if (frame.kind === "answer" && pc.signalingState !== "have-local-offer") return;
    // An offer says everything the node sends; an answer may say nothing yet.
    if (frame.kind === "offer" || (frame.streams || []).length) this.learn(frame.streams || []);
    await pc.setRemoteDescription({ type: frame.kind, sdp: frame.sdp });
    if (frame.kind === "offer" && frame.screen_mid) await this.sendScreenOn(pc, frame.screen_mid);
    if (frame.kind === "offer") {
      await pc.setLocalDescription(await pc.createAnswer());
      this.send({ kind: "answer", sdp: pc.localDescription.sdp });
    }
    this.report();
  }

  learn(streams) {
    this.owners = new Map(streams.map((s) => [s.mid, s.participant_id]));
    this.kinds = new Map(streams.map((s) => [s.mid, s.kind]));
    this.learned = true;
  }

  // Signaling granted this page the screen share: the node offers a mid to send it on.
  async sendScreenOn(pc, mid) {
    const transceiver = pc.getTransceivers().find((t) => t.mid === mid);
    if (!transceiver) return;
    const track = this.screen();
    transceiver.direction = track ? "sendonly" : "inactive";
    await transceiver.sender.replaceTrack(track);
  }

  // Whose tracks arrive now, by participant: only mids the node says it sends.
  report() {
    if (!this.pc || !this.learned) return;
    const people = new Map();
    let screen = null;
    let sharer = null;
    for (const transceiver of this.pc.getTransceivers()) {
      const owner = this.owners.get(transceiver.mid);
      const direction = transceiver.currentDirection || "";
      if (!owner || !direction.includes("recv") || !transceiver.receiver.track) continue;
      if (this.kinds.get(transceiver.mid) === "screen") {
        [screen, sharer] = [transceiver.receiver.track, owner]; // shown large, not in a tile
        continue;
      }
      if (!people.has(owner)) people.set(owner, []);
      people.get(owner).push(transceiver.receiver.track);
    }
    this.onRemote(people);
    this.onScreen(screen, sharer);
  }

  // Audio packets received so far from each remote person, by participant id: which voices
  // the node forwards (it sends only the loudest few). Read by tests; nothing personal.
  async voices() {
    const out = {};
    if (!this.pc) return out;
    const owners = new Map();
    for (const transceiver of this.pc.getTransceivers()) {
      const track = transceiver.receiver.track;
      const owner = this.owners.get(transceiver.mid);
      if (owner && track && track.kind === "audio") owners.set(track.id, owner);
    }
    const stats = await this.pc.getStats();
    stats.forEach((report) => {
      if (report.type !== "inbound-rtp" || report.kind !== "audio") return;
      const owner = this.owners.get(report.mid) || owners.get(report.trackIdentifier);
      if (owner) out[owner] = (out[owner] || 0) + report.packetsReceived;
    });
    return out;
  }

  stop() {
    this.active = false;
    this.close();
  }

  close() {
    clearTimeout(this.timer);
    if (this.pc) {
      this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    this.pc = null;
  }
}
