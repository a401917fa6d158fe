"""The accuracy benchmark's evaluation sets: recorded human speech (57 LibriSpeech utterances,
benchmarks/data/real, as conversations of several speakers, and as one long recording), and
espeak-ng conversations of known sentences in many voices with jfk.flac; and what a streamed (or
simulated) session returned for one of them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stt.speech import Speech, conversation, joined, recording

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "benchmarks" / "data" / "real"
JFK = ROOT / "tests" / "data" / "jfk.flac"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

SHORT = [
    "Yes, of course.",
    "Good morning.",
    "Thank you very much.",
    "Not today.",
    "See you tomorrow.",
    "Where is the station?",
    "Turn left here.",
    "That sounds great.",
    "I agree with you.",
    "Please wait.",
    "Open the door.",
    "It is raining again.",
    "Call me later.",
    "Nobody knows.",
    "Good night, everyone.",
    "Let me think.",
    "What time is it?",
    "Close the window.",
    "Happy birthday.",
    "Well done.",
    "Come back soon.",
    "I am not sure.",
    "Lunch is ready.",
    "Stop right there.",
    "Sounds good to me.",
    "Hold on a second.",
    "Keep the change.",
    "Enjoy your meal.",
    "No problem at all.",
    "Sit down, please.",
    "The bus is late.",
    "Try it again.",
    "Drive safely.",
    "Bring your coat.",
    "Dinner is served.",
    "Excuse me, sir.",
]
MEDIUM = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.",
    "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.",
    "Hop over the fence and plunge in.",
    "The frosty air passed through the coat.",
    "The crooked maze failed to fool the mouse.",
    "The show was a flop from the very start.",
    "A saw is a tool used for making boards.",
]
LONG = [
    "When the morning train finally arrived at the small station, the passengers who had been waiting in the "
    "cold for almost an hour rushed toward the doors, carrying their bags and complaining about the delay.",
    "Our neighbors decided to plant a vegetable garden behind their house this spring, with rows of beans, "
    "carrots and tomatoes, and they promised to share whatever they could not eat themselves.",
    "The museum will be closed for repairs during the whole month of March, but the gift shop and the cafe on "
    "the ground floor will stay open every day from nine in the morning until six in the evening.",
    "If you want to reach the old lighthouse before sunset, follow the narrow road along the coast, cross the "
    "wooden bridge over the river, and then walk up the hill past the church.",
    "The committee spent most of the afternoon discussing the budget for next year, and in the end they agreed "
    "to spend more money on the library and less on new furniture for the offices.",
    "My grandmother used to tell us stories about the winter when the lake froze so hard that the whole village "
    "walked across the ice to the market on the other side.",
    "After the storm had passed, the children ran outside to look at the damage, and they found that a large "
    "branch had fallen from the oak tree and crushed the fence around the garden.",
    "The engineers tested the new bridge by driving heavy trucks across it for several days, measuring how much "
    "the steel beams moved and checking every bolt for signs of stress.",
    "Before you leave the office tonight, please make sure that all the windows are closed, the lights are "
    "switched off, and the front door is locked behind you.",
    "The small bakery at the corner of our street sells fresh bread every morning, and by eight o'clock there is "
    "usually a long line of people waiting patiently outside in the cold.",
    "During the long summer holidays we drove across the country in an old van, stopping in small towns, "
    "sleeping under the stars, and cooking our meals over an open fire.",
    "The doctor explained that the patient would need to rest for at least two weeks, drink plenty of water, and "
    "avoid any heavy lifting until the wound had completely healed.",
    "Scientists have discovered a new species of frog in the rain forest, a tiny creature no bigger than a "
    "fingernail that sings a high song at night to attract a mate.",
    "The teacher asked every student to write a short story about a journey, and the best stories will be read "
    "aloud at the school concert at the end of the term.",
    "Although the weather forecast promised a sunny weekend, it rained without stopping from Friday evening "
    "until Sunday night, and the picnic had to be moved indoors.",
    "The old clock in the hall had stopped working many years ago, but nobody in the family wanted to throw it "
    "away, because it had belonged to their great grandfather.",
    "To make the soup, slowly fry the onions in butter, add the potatoes and the stock, let everything simmer "
    "for half an hour, and then season it with salt and pepper.",
    "The fishermen left the harbor long before dawn, hoping to return with a good catch, but a thick fog rolled "
    "in from the sea and they had to turn back early.",
    "Every evening the old man walked his dog along the river, greeting the same people on the same benches, "
    "and he always carried a pocket full of bread for the ducks.",
    "The new library has quiet rooms for studying, a large collection of books for children, and computers that "
    "anyone can use for free with a library card.",
    "When the power went out in the middle of the concert, the musicians kept playing in the dark, and the "
    "audience lit their phones and sang along with them.",
    "The company announced that it would open a new factory in the north of the country next year, creating "
    "hundreds of jobs for the people who live in the region.",
    "She packed her suitcase the night before the trip, with warm clothes for the mountains, a good book for "
    "the train, and a map of the city where she would stay.",
    "The farmers watched the dark clouds gathering over the hills and hurried to bring the hay into the barn "
    "before the first heavy drops of rain began to fall.",
]
VOICES = [
    ("en-us", 160),
    ("en-gb", 160),
    ("en-gb-scotland", 150),
    ("en-029", 170),
    ("en-us+f3", 175),
    ("en-gb-x-rp", 140),
    ("en-us-nyc", 185),
    ("en-gb-x-gbclan", 160),
    ("en-us+m3", 200),
    ("en-gb+f2", 130),
    ("en-us", 150),
    ("en-gb", 190),
]
PAUSES = [0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 0.5, 1.2]
# Per conversation: 3 short, 4 medium and 2 long sentences, interleaved.
PATTERN = ["short", "medium", "long", "medium", "short", "medium", "long", "short", "medium"]
LENGTHS = {"short": (0.0, 2.0), "medium": (2.0, 6.0), "long": (6.0, 99.0)}
RECORDED_LENGTHS = {"< 4 s": (0.0, 4.0), "4-10 s": (4.0, 10.0), "> 10 s": (10.0, 99.0)}
RECORDED_PAUSES = [0.9, 1.4, 0.7, 1.8, 1.1, 0.8, 1.5]


@dataclass
class Conversation:
    name: str
    voice: str
    speed: int
    speech: Speech
    # Per sentence: corpus, speaker, gender, seconds (the recorded set's; espeak's say their voice).
    meta: list[dict[str, Any]] = field(default_factory=list)
    # Per sentence, a direct decode of its own recording (the recorded set); None: the whole
    # conversation is decoded directly instead (espeak, whose sentences are not recordings).
    sentence_audio: list[Any] | None = None


def recorded_utterances() -> list[tuple[Speech, dict[str, Any]]]:
    """Every recorded utterance (name order), with its metadata; no silence added after it."""
    refs: dict[str, dict[str, Any]] = json.loads((REAL / "refs.json").read_text())
    out = []
    for name in sorted(refs):
        ref = refs[name]
        speech = recording(str(REAL / name), ref["text"].lower(), tail_s=0.0)
        meta = {"corpus": ref.get("corpus", "librispeech"), "speaker": ref["speaker"], "gender": ref["gender"]}
        out.append((speech, {**meta, "seconds": ref["seconds"], "file": name}))
    return out


def recorded_set(conversations: int = 8) -> list[Conversation]:
    """The recorded utterances as `conversations` conversations of different speakers in turn,
    each sentence a recording, pauses of 0.7 to 1.8 s between them; lengths spread evenly."""
    utts = sorted(recorded_utterances(), key=lambda u: u[1]["seconds"])
    groups: list[list[tuple[Speech, dict[str, Any]]]] = [[] for _ in range(conversations)]
    for i, u in enumerate(utts):
        groups[i % conversations].append(u)
    out = []
    for i, group in enumerate(groups):
        speech = joined([s for s, _ in group], [RECORDED_PAUSES[(i + j) % 7] for j in range(7)])
        out.append(
            Conversation(
                "rec%02d" % i,
                "recorded",
                0,
                speech,
                meta=[m for _, m in group],
                sentence_audio=[s.audio for s, _ in group],
            )
        )
    return out


def longform() -> tuple[Speech, list[dict[str, Any]]]:
    """Every recorded utterance in one long recording (about 8 minutes), pauses of 0.7-1.8 s."""
    utts = recorded_utterances()
    return joined([s for s, _ in utts], RECORDED_PAUSES), [m for _, m in utts]


def eval_set(limit: int | None = None) -> list[Conversation]:
    """The evaluation conversations (deterministic: the same sentences, voices and pauses each time)."""
    pools = {"short": iter(SHORT), "medium": iter(MEDIUM), "long": iter(LONG)}
    out = []
    for i, (voice, speed) in enumerate(VOICES[:limit]):
        texts = [next(pools[kind]) for kind in PATTERN]
        pauses = [PAUSES[(i + j) % len(PAUSES)] for j in range(len(texts) - 1)]
        speech = conversation(texts, pause_s=pauses, voice=voice, speed=speed)
        meta = [{"corpus": "espeak-ng", "speaker": voice, "gender": "-"}] * len(texts)
        out.append(Conversation("c%02d-%s" % (i, voice), voice, speed, speech, meta=meta))
    jfk_meta = [{"corpus": "jfk", "speaker": "jfk", "gender": "M"}]
    out.append(Conversation("jfk", "jfk (recorded)", 0, recording(str(JFK), JFK_TEXT), meta=jfk_meta))
    return out


@dataclass
class Session:
    finals: list[dict[str, Any]] = field(default_factory=list)
    interims: list[dict[str, Any]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    error: str = ""
    decode_ms: dict[str, list[float]] = field(default_factory=dict)  # per kind (simulate only)

    @property
    def text(self) -> str:
        return " ".join(f["text"] for f in sorted(self.finals, key=lambda f: f["utterance"]))
