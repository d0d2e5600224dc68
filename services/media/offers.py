"""The node's own offers, written in the participant's terms.

aiortc 1.16 builds every offer from its defaults: each transceiver's codecs and RTP header
extensions are reset to aiortc's payload types and extension ids (VP8 = 97, ``sdes:mid`` = 1),
also on m-lines already negotiated with other values. A browser refuses that: with BUNDLE,
one payload type or extension id means one thing on every m-line, and an id may not change
meaning during a call (Chromium: "RTP extension ID reassignment not supported", "codec
collision for payload type"). Peers built on aiortc accept anything, so only browsers see it.

So before the node sets its offer, every m-section is rewritten in the terms of the
participant's own first offer: its payload type for each codec (RTX follows its base codec)
and its id for each header extension; codecs and extensions the participant did not offer
are left out. The participant's answer then repeats those terms, and aiortc takes them from
the answer for sending and receiving, as it does for any answer.
"""

import copy

from aiortc import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters, sdp
from aiortc.codecs import is_rtx
from aiortc.rtcpeerconnection import is_codec_compatible


class Terms:
    """What one participant called each codec and header extension, per media kind."""

    def __init__(self, offer: str) -> None:
        parsed = sdp.SessionDescription.parse(offer)
        self.codecs: dict[str, list[RTCRtpCodecParameters]] = {}
        self.extensions: dict[str, int] = {}
        for media in parsed.media:
            if media.kind not in ("audio", "video"):
                continue
            known = self.codecs.setdefault(media.kind, [])
            taken = {c.payloadType for c in known}
            known.extend(c for c in media.rtp.codecs if c.payloadType not in taken)
            for extension in media.rtp.headerExtensions:
                self.extensions.setdefault(extension.uri, extension.id)

    def rewrite(self, offer: str) -> str:
        """``offer`` (the node's, from aiortc) in these terms."""
        parsed = sdp.SessionDescription.parse(offer)
        for media in parsed.media:
            if media.kind in self.codecs:
                self._rewrite_media(media)
        return str(parsed)

    def _rewrite_media(self, media: sdp.MediaDescription) -> None:
        theirs = self.codecs[media.kind]
        renamed: dict[int, int] = {}  # our payload type -> theirs
        codecs: list[RTCRtpCodecParameters] = []
        for codec in media.rtp.codecs:
            if is_rtx(codec):
                continue
            match = next(
                (c for c in theirs if not is_rtx(c) and is_codec_compatible(codec, c)), None
            )
            if codec.payloadType is None or match is None or match.payloadType is None:
                continue
            if match.payloadType in renamed.values():
                continue
            renamed[codec.payloadType] = match.payloadType
            codecs.append(_with_payload_type(codec, match.payloadType))
        for codec in media.rtp.codecs:
            apt = codec.parameters.get("apt") if is_rtx(codec) else None
            if not isinstance(apt, int) or apt not in renamed:
                continue
            base = renamed[apt]
            match = next((c for c in theirs if is_rtx(c) and c.parameters.get("apt") == base), None)
            if match is not None and match.payloadType is not None:
                rtx = _with_payload_type(codec, match.payloadType)
                rtx.parameters = {**rtx.parameters, "apt": base}
                codecs.append(rtx)
        if not codecs:
            return  # nothing they can receive: left as aiortc wrote it (see docs/media.md)
        media.rtp.codecs = codecs
        media.fmt = [c.payloadType for c in codecs]
        media.rtp.headerExtensions = [
            RTCRtpHeaderExtensionParameters(id=self.extensions[x.uri], uri=x.uri)
            for x in media.rtp.headerExtensions
            if x.uri in self.extensions
        ]


def _with_payload_type(codec: RTCRtpCodecParameters, payload_type: int) -> RTCRtpCodecParameters:
    renamed = copy.deepcopy(codec)
    renamed.payloadType = payload_type
    return renamed


def with_opus_dtx(description: str) -> str:
    """``description`` asking for Opus DTX (``usedtx=1``): a browser then sends almost nothing
    while its person is silent, and the node has less to read and forward."""
    lines = description.split("\r\n")
    opus = {
        line.split()[0].removeprefix("a=rtpmap:")
        for line in lines
        if line.startswith("a=rtpmap:") and line.split()[1].lower().startswith("opus/")
    }
    with_fmtp = {
        line.split()[0].removeprefix("a=fmtp:") for line in lines if line.startswith("a=fmtp:")
    }
    out = []
    for line in lines:
        fmtp = line.startswith("a=fmtp:") and line.split()[0].removeprefix("a=fmtp:") in opus
        if fmtp and "usedtx=" not in line:
            line += ";usedtx=1"
        out.append(line)
        if line.startswith("a=rtpmap:"):
            payload_type = line.split()[0].removeprefix("a=rtpmap:")
            if payload_type in opus and payload_type not in with_fmtp:
                out.append(f"a=fmtp:{payload_type} usedtx=1")
    return "\r\n".join(out)
