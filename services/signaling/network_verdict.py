"""The verdict of a pre-call network test: good, may be choppy, or video will not work.

Pure: figures in, a verdict and what to do out. The thresholds are published ones:

- **Loss** (the worse direction): the WebRTC congestion controller browsers run (Google
  Congestion Control, draft-ietf-rmcat-gcc-02 §6) raises its rate below 2% loss, holds it
  between 2% and 10%, and cuts it above 10%. So < 2% is good, up to 10% the picture stutters
  as the rate holds, and past 10% video shrinks to nothing.
- **Round trip**: ITU-T G.114 holds one-way delay up to 150 ms fine for conversation and
  400 ms the limit for planning a network: an RTT < 300 ms is good, < 800 ms usable.
- **Jitter**: < 30 ms, the bound Microsoft's Teams network requirements set for real-time
  media; above it the receiver's jitter buffer adds delay or drops late packets.
- **Bitrate** the uplink reached (what the camera's video can use): >= 1 Mbit/s for good
  video (1:1 720p calls need about 1.2 Mbit/s in Zoom's published system requirements; this
  node asks a publisher for at most 1.5 Mbit/s), and at least 250 kbit/s for any video at
  all (the lowest rate a VP8 encoder is driven at in aiortc and libwebrtc's defaults), while
  audio alone needs under 100 kbit/s.

The downlink's bitrate is reported but not judged: the node echoes what it received, so it
can carry no more than the uplink brought; the downlink is judged by its loss and jitter.
"""

from dataclasses import dataclass

from contracts.signaling_protocol import NetworkVerdict as Verdict

GOOD_LOSS = 0.02
VIDEO_LOSS = 0.10
GOOD_RTT_MS = 300.0
USABLE_RTT_MS = 800.0
GOOD_JITTER_MS = 30.0
GOOD_KBPS = 1000.0
VIDEO_KBPS = 250.0


HEADLINES = {
    Verdict.good: "Your connection is good for a video call.",
    Verdict.may_be_choppy: "Your call may be choppy: video may freeze or sound may break up.",
    Verdict.video_will_not_work: "Video will not work well on this connection.",
}

CLOSER = "Move closer to your Wi-Fi router, or use a wired connection."
OTHER_APPS = "Close other apps and browser tabs that use the internet (downloads, streaming)."
AUDIO_ONLY = "Join with your camera off (audio only); you can turn it on later."
SLOW = (
    "Your connection is slow to answer: if you use a VPN, turn it off; on a mobile network, "
    "try Wi-Fi."
)
BLOCKED = (
    "Your network does not let the call's media through: try another network (for example "
    "your phone's hotspot), or ask your IT department to allow video calls (WebRTC)."
)


@dataclass(frozen=True)
class Figures:
    """What a test measured; ``None`` where nothing was measured."""

    connected: bool
    rtt_ms: float | None
    uplink_loss: float | None
    downlink_loss: float | None
    uplink_jitter_ms: float | None
    downlink_jitter_ms: float | None
    uplink_kbps: float | None


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    headline: str
    advice: list[str]
    reasons: list[str]
    """Which figures fell short, as stable codes (``loss``, ``rtt``, ``jitter``, ``bitrate``,
    ``no_media``)."""


def judge(f: Figures) -> Judgement:
    """The verdict: the worst any figure earns; the advice for each figure that fell short."""
    if not f.connected:
        v = Verdict.video_will_not_work
        return Judgement(v, "The call's media could not connect.", [BLOCKED], ["no_media"])
    worst = Verdict.good
    advice: list[str] = []
    reasons: list[str] = []

    def short(reason: str, verdict: Verdict, *what: str) -> None:
        nonlocal worst
        if _rank(verdict) > _rank(worst):
            worst = verdict
        reasons.append(reason)
        advice.extend(a for a in what if a not in advice)

    loss = max((x for x in (f.uplink_loss, f.downlink_loss) if x is not None), default=None)
    if loss is not None and loss >= VIDEO_LOSS:
        short("loss", Verdict.video_will_not_work, CLOSER, OTHER_APPS, AUDIO_ONLY)
    elif loss is not None and loss >= GOOD_LOSS:
        short("loss", Verdict.may_be_choppy, CLOSER, OTHER_APPS)
    if f.rtt_ms is not None and f.rtt_ms >= USABLE_RTT_MS:
        short("rtt", Verdict.video_will_not_work, SLOW, AUDIO_ONLY)
    elif f.rtt_ms is not None and f.rtt_ms >= GOOD_RTT_MS:
        short("rtt", Verdict.may_be_choppy, SLOW)
    jitter = max(
        (x for x in (f.uplink_jitter_ms, f.downlink_jitter_ms) if x is not None), default=None
    )
    if jitter is not None and jitter >= GOOD_JITTER_MS:
        short("jitter", Verdict.may_be_choppy, CLOSER, OTHER_APPS)
    if f.uplink_kbps is not None and f.uplink_kbps < VIDEO_KBPS:
        short("bitrate", Verdict.video_will_not_work, OTHER_APPS, AUDIO_ONLY)
    elif f.uplink_kbps is not None and f.uplink_kbps < GOOD_KBPS:
        short("bitrate", Verdict.may_be_choppy, OTHER_APPS)
    return Judgement(worst, HEADLINES[worst], advice, reasons)


def _rank(verdict: Verdict) -> int:
    return list(Verdict).index(verdict)
