"""The node's own offers speak the browser's payload types and extension ids.

``data/chromium-offer.sdp`` is a first offer made by Debian's Chromium 156 (camera and
microphone, BUNDLE). Chromium refuses a later offer that gives a payload type or an extension
id another meaning; aiortc's offers do exactly that, which is what ``offers.Terms`` undoes.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, sdp
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from services.media.offers import Terms

CHROMIUM_OFFER = (Path(__file__).parent / "data" / "chromium-offer.sdp").read_text()


@pytest.fixture
async def node_offer() -> AsyncIterator[str]:
    """What the node offers once someone else's audio and video are to be forwarded."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(CHROMIUM_OFFER, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        yield (await pc.createOffer()).sdp
    finally:
        await pc.close()


def meanings(description: str) -> tuple[dict[int, set[str]], dict[int, set[str]]]:
    """Across the bundle: what each payload type and each extension id stands for."""
    payload_types: dict[int, set[str]] = {}
    extensions: dict[int, set[str]] = {}
    for media in sdp.SessionDescription.parse(description).media:
        for codec in media.rtp.codecs:
            name = f"{codec.mimeType.lower()}/{codec.clockRate}"
            if codec.mimeType.lower().endswith("/rtx"):
                name += f" apt={codec.parameters.get('apt')}"
            payload_types.setdefault(codec.payloadType, set()).add(name)
        for extension in media.rtp.headerExtensions:
            extensions.setdefault(extension.id, set()).add(extension.uri)
    return payload_types, extensions


def test_aiortcs_own_offer_would_be_refused_by_the_browser(node_offer: str) -> None:
    """The reason for the rewrite: left alone, ids collide with the browser's."""
    ours, our_extensions = meanings(node_offer)
    theirs, their_extensions = meanings(CHROMIUM_OFFER)
    assert ours[97] != theirs[97]  # aiortc's VP8 is Chromium's RTX
    assert our_extensions[1] != their_extensions[1]  # sdes:mid against ssrc-audio-level


def test_the_rewritten_offer_uses_the_browsers_terms_on_every_m_line(node_offer: str) -> None:
    rewritten = Terms(CHROMIUM_OFFER).rewrite(node_offer)
    theirs, their_extensions = meanings(CHROMIUM_OFFER)
    ours, our_extensions = meanings(rewritten)
    for payload_type, names in ours.items():
        assert len(names) == 1, f"payload type {payload_type} means {names} across the bundle"
        assert names <= theirs[payload_type], f"{payload_type} is {names}, Chromium's {theirs}"
    for extension_id, uris in our_extensions.items():
        assert uris == their_extensions[extension_id]
    media = sdp.SessionDescription.parse(rewritten).media
    assert len(media) == 4, "the browser's two m-lines and the two forwarded ones"
    for m in media:
        assert m.fmt == [c.payloadType for c in m.rtp.codecs]
        assert m.rtp.codecs, "every m-line keeps a codec"
    video = [m for m in media if m.kind == "video"]
    assert all(m.rtp.codecs[0].mimeType == "video/VP8" for m in video)
    assert all(m.rtp.codecs[0].payloadType == 96 for m in video)
    rtx = {
        c.payloadType: c.parameters.get("apt") for c in video[-1].rtp.codecs if "rtx" in c.mimeType
    }
    assert rtx[97] == 96
    audio = [m for m in media if m.kind == "audio"]
    assert all(m.rtp.codecs[0].payloadType == 111 for m in audio)


async def test_a_peer_accepts_the_rewritten_offer_and_answers_in_the_same_terms(
    node_offer: str,
) -> None:
    """aiortc on the other side, standing in for the browser's answer: it keeps the terms, and
    the node takes them from the answer."""
    rewritten = Terms(CHROMIUM_OFFER).rewrite(node_offer)
    answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await answerer.setRemoteDescription(RTCSessionDescription(rewritten, "offer"))
        await answerer.setLocalDescription(await answerer.createAnswer())
        answer = answerer.localDescription.sdp
    finally:
        await answerer.close()
    payload_types, extensions = meanings(answer)
    assert payload_types.get(96) == {"video/vp8/90000"}
    assert extensions[4] == {"urn:ietf:params:rtp-hdrext:sdes:mid"}


def test_an_offer_that_cannot_be_read_is_refused_before_anything_starts() -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - aiortc's parser raises many kinds
        Terms("m=video 9 UDP/TLS/RTP/SAVPF not-a-number\r\n")


def test_the_node_asks_for_opus_dtx_in_what_it_sends() -> None:
    from services.media.offers import with_opus_dtx

    with_fmtp = (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
        "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
    )
    assert "a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1" in with_opus_dtx(with_fmtp)
    without = (
        "m=audio 9 UDP/TLS/RTP/SAVPF 96 0\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    rewritten = with_opus_dtx(without)
    assert "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 usedtx=1\r\n" in rewritten
    assert "a=fmtp:0" not in rewritten
    assert with_opus_dtx(with_opus_dtx(with_fmtp)) == with_opus_dtx(with_fmtp)
