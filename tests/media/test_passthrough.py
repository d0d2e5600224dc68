"""The private aiortc hooks the SFU forwards through, checked against the installed aiortc,
so that an upgrade that moves them fails here instead of decoding silently again."""

import asyncio
import fractions
import queue

import aiortc
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError

from services.media import passthrough
from services.media.passthrough import (
    AIORTC_VERSION,
    EncodedFrame,
    ForwardedTrack,
    IncompatibleAiortc,
    check_aiortc,
    is_keyframe,
    on_keyframe_request,
    tap_receiver,
)

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


def vp8_frames(count: int) -> list[bytes]:
    """Real VP8 frames from libvpx: a keyframe, then deltas."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 160, 120, "yuv420p"
    codec.time_base = fractions.Fraction(1, 15)
    codec.options = {"g": "1000"}
    out = []
    for n in range(count):
        picture = np.full((120, 160, 3), n * 20 % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = n
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return out


def frame(data: bytes, keyframe: bool, codec: RTCRtpCodecParameters = VP8) -> EncodedFrame:
    return EncodedFrame(codec, data, 3000, keyframe, 0.0)


def test_the_installed_aiortc_is_the_pinned_one_with_the_hooks() -> None:
    assert aiortc.__version__ == AIORTC_VERSION
    check_aiortc()


def test_a_different_aiortc_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(IncompatibleAiortc, match=r"1\.17\.0"):
        check_aiortc()


async def test_the_receiver_still_has_the_decoder_queue_the_tap_replaces() -> None:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    receiver = transceiver.receiver
    assert isinstance(receiver, RTCRtpReceiver)
    decoder_queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    assert isinstance(decoder_queue, queue.Queue)
    seen: list[EncodedFrame] = []
    tap_receiver(receiver, seen.append)
    keyframe = vp8_frames(1)[0]

    class Jittered:  # what the jitter buffer puts: (codec, JitterFrame)
        data = keyframe
        timestamp = 9000

    decoder_queue.put((VP8, Jittered()))
    decoder_queue.put(None)  # end of stream still reaches the decoder thread
    assert [f.timestamp for f in seen] == [9000]
    assert seen[0].keyframe
    assert decoder_queue.get_nowait() is None
    packet = seen[0].packet
    assert bytes(packet) == keyframe
    assert packet.pts == 9000
    assert packet.time_base == fractions.Fraction(1, 90000)
    await pc.close()


async def test_a_tap_that_decodes_as_well_passes_every_frame_on_to_the_decoder() -> None:
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    decoder_queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    seen: list[EncodedFrame] = []
    tap_receiver(receiver, seen.append, decode=True)

    class Jittered:
        data = vp8_frames(1)[0]
        timestamp = 3000

    item = (VP8, Jittered())
    decoder_queue.put(item)
    assert [f.timestamp for f in seen] == [3000]
    assert decoder_queue.get_nowait() is item
    await pc.close()


async def test_a_keyframe_request_from_a_subscriber_reaches_the_hook() -> None:
    pc = RTCPeerConnection()
    sender = pc.addTransceiver("video", direction="sendonly").sender
    asked: list[bool] = []
    on_keyframe_request(sender, lambda: asked.append(True))
    sender._send_keyframe()  # what aiortc calls on RTCP PLI or FIR
    assert asked == [True]
    await pc.close()


def test_vp8_and_h264_keyframes_are_told_from_delta_frames() -> None:
    frames = vp8_frames(4)
    assert [is_keyframe("video/VP8", f) for f in frames] == [True, False, False, False]
    sps_idr = b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x65\x88"
    non_idr = b"\x00\x00\x00\x01\x41\x9a"
    assert is_keyframe("video/H264", sps_idr)
    assert not is_keyframe("video/H264", non_idr)
    assert is_keyframe("audio/opus", b"\x01")


async def test_a_new_subscriber_gets_nothing_before_a_keyframe_and_asks_for_one() -> None:
    asked: list[bool] = []
    track = ForwardedTrack("video", lambda: asked.append(True))
    key, delta = vp8_frames(2)
    track.push(frame(delta, False))
    assert track.dropped == 1
    track.push(frame(key, True))
    track.push(frame(delta, False))
    assert bytes(await track.recv()) == key
    assert bytes(await track.recv()) == delta
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_a_subscriber_that_falls_behind_waits_for_the_next_keyframe() -> None:
    asked: list[bool] = []
    track = ForwardedTrack("video", lambda: asked.append(True), depth=4)
    key, delta = vp8_frames(2)
    track.push(frame(key, True))
    for _ in range(3):
        track.push(frame(delta, False))
    track.push(frame(delta, False))  # the queue is full: dropped, and a keyframe is asked for
    assert asked == [True]
    assert track.waiting_for_keyframe
    track.push(frame(delta, False))
    track.push(frame(key, True))
    assert bytes(await asyncio.wait_for(track.recv(), 1)) == key


async def test_audio_is_forwarded_from_the_first_frame() -> None:
    track = ForwardedTrack("audio", lambda: None)
    track.push(frame(b"\x78\x01\x02", True, OPUS))
    packet = await track.recv()
    assert packet.time_base == fractions.Fraction(1, 48000)


def test_the_module_names_the_private_attribute_it_needs() -> None:
    assert passthrough._QUEUE == "_RTCRtpReceiver__decoder_queue"
