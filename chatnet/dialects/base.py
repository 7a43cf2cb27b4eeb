"""What the dialects whose login is one line (text, JSON) share: nothing to negotiate."""

from __future__ import annotations

from typing import ClassVar

from mypy_extensions import mypyc_attr


# Compiled with the text dialect (chatnet/native.py); the JSON dialect, interpreted, derives from it.
@mypyc_attr(allow_interpreted_subclasses=True)
class OneLineLogin:
    rejoins: ClassVar[bool] = False
    in_order: ClassVar[bool] = False
    echoes_own: ClassVar[bool] = False

    def logged_in(self, name: str, account: bool) -> str:
        return ""  # the router's welcome notice says it all

    def ident(self) -> tuple[str, str]:
        return ("", "")  # no username or real name: the name is all

    def authenticated(self, name: str) -> str:
        return ""  # never asked: credentials come with the login
