"""Emulators of the platforms `launch` targets, speaking their real wire protocols.

Each one is started in-process by tests or in the foreground by `launch sim serve NAME`; the
platform's own unchanged client works against it (see DESIGN.md, "Platforms offline").
"""
