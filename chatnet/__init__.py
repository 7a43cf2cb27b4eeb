"""chatnet: a small chat network on asyncio.

The root scripts are the entry points. Importing the package only decides which build of
the hot path runs: the compiled one when it matches the sources (chatnet/native.py).
"""

from chatnet import native

native.use_if_fresh(__path__)
