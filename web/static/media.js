// One peer connection to the media node that holds this person's seat (docs/media.md).
//
// The first offer is ours and carries what we publish; after that the node offers whenever
// what we should receive changes, with `streams` saying whose media each of its mids
// carries, and we answer. Candidates trickle to the node as `signal` frames; the node's
// descriptions carry all of its own.

export class Media {
  constructor({ iceServers, send, onRemote, onFailed }) {
    this.iceServers = iceServers;
    this.send = send; // (fields) => a `signal` frame to signaling
    this.onRemote = onRemote; // (Map participant_id -> MediaStreamTrack[]) on every change
    this.onFailed = onFailed; // (sentence) when the connection cannot go on
    this.pc = null;
    this.owners = new Map(); // mid -> participant_id
    this.queue = Promise.resolve();
  }

  async start(localStream) {
    this.stop();
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;
    this.owners.clear();
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
      if (pc === this.pc && pc.connectionState === "failed") {
        this.onFailed("The video connection failed. Check your network, then rejoin.");
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
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
      this.stop();
      this.onFailed(frame.message || "The video connection was closed.");
      return;
    }
    if (frame.kind !== "offer" && frame.kind !== "answer") return;
    if (frame.kind === "answer" && pc.signalingState !== "have-local-offer") return;
    // An offer says everything the node sends; an answer may say nothing yet.
    if (frame.kind === "offer" || (frame.streams || []).length) this.learn(frame.streams || []);
    await pc.setRemoteDescription({ type: frame.kind, sdp: frame.sdp });
    if (frame.kind === "offer") {
      await pc.setLocalDescription(await pc.createAnswer());
      this.send({ kind: "answer", sdp: pc.localDescription.sdp });
    }
    this.report();
  }

  learn(streams) {
    this.owners = new Map(streams.map((s) => [s.mid, s.participant_id]));
  }

  // Whose tracks arrive now, by participant: only mids the node says it sends.
  report() {
    if (!this.pc) return;
    const people = new Map();
    for (const transceiver of this.pc.getTransceivers()) {
      const owner = this.owners.get(transceiver.mid);
      const direction = transceiver.currentDirection || "";
      if (!owner || !direction.includes("recv") || !transceiver.receiver.track) continue;
      if (!people.has(owner)) people.set(owner, []);
      people.get(owner).push(transceiver.receiver.track);
    }
    this.onRemote(people);
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
    if (this.pc) {
      this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
    this.pc = null;
  }
}
