"""Fast unit tests of the domain modules a silent regression would hurt most (and that mutation testing runs)."""

from diary_platform.domain.speech.guards import GuardConfig, apply_guards, has_repetition_loop
from diary_platform.domain.speech.transcription import Segment


def test_guards_catch_a_repetition_loop_and_silence_hallucinations():
    def segment(text, start, **scores):
        values = {"avg_logprob": -0.3, "no_speech_prob": 0.1, "compression_ratio": 1.3, **scores}
        return Segment(start=start, end=start + 2, text=text, **values)

    segments = [
        segment("I went to the shop.", 0),
        segment("Thank you. Thank you. Thank you. Thank you. Thank you.", 2),
        segment("and then and then and then and then and then and then", 4, compression_ratio=3.1),
        segment("Subscribe to my channel!", 6, no_speech_prob=0.9, avg_logprob=-1.4),
        segment("It was raining.", 8),
        segment("It was raining.", 10),
    ]
    kept, dropped = apply_guards(segments, GuardConfig())
    assert [s.text for s in kept] == ["I went to the shop.", "It was raining."]
    assert [d.guard for d in dropped] == ["repetition_loop", "compression_ratio", "silence", "repeated_segment"]
    assert not has_repetition_loop("we had a very very good day", 3, 6)
    assert has_repetition_loop("no no no no", 3, 6)
