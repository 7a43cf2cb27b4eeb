"""chatnet: a small chat network on asyncio.

Importing the package does nothing; the root scripts are the entry points.
"""
