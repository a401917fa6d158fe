"""The languages a session may ask for: Whisper's language codes, and "auto".

Kept here (not asked of faster-whisper) so the gateway checks `lang` at `start` without loading
the model's libraries; a test keeps this list equal to faster-whisper's.
"""

from __future__ import annotations

WHISPER_LANGUAGES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu "
    "hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro "
    "ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue".split()
)
AUTO = "auto"
