"""Source the generated Kaggle kernel and Colab notebook share: installing what the lowered
image needs that the platform's own Python lacks (or has at an incompatible version).

It is text, not code of this package, because it runs there: each template pastes it in where
it has defined `CONFIG` (with "requirements" from `Lowered.requirements` and "pip_options"),
`say(msg)` and `fail(code, msg)`. Plain Python 3 with the standard library only.
"""

from __future__ import annotations

INSTALL_SOURCE = r'''
SAME_PACKAGE = {"tensorflow-cpu": "tensorflow", "tensorflow": "tensorflow-cpu"}


def numbers(version):
    """(2, 13, 0) of "2.13.0+cu121": leading digits of each release part."""
    out = []
    for part in version.split("+")[0].split("."):
        digits = ""
        for c in part:
            if not c.isdigit():
                break
            digits += c
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def compatible(have, op, want):
    if not op or not want:
        return True
    h, w = numbers(have), numbers(want)
    if op == "==":  # the same release, or the same feature release (x.y) of a x.y.z pin
        return h[: len(w)] + (0,) * (len(w) - len(h)) == w or (len(w) > 2 and h[:2] == w[:2])
    if op == "~=":
        return h >= w and h[: max(1, len(w) - 1)] == w[: max(1, len(w) - 1)]
    return {">=": h >= w, "<=": h <= w, ">": h > w, "<": h < w, "!=": h != w}.get(op, True)


def installed(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def install_requirements():
    missing = []
    for req in CONFIG["requirements"]:
        name, line = req["name"], req["line"]
        have = installed(name)
        other = SAME_PACKAGE.get(name.lower())
        if have is None and other and installed(other) is not None:
            # the same package under its other name (tensorflow-cpu / tensorflow): installing
            # this one beside it would mix two builds in one folder; stay with what is there
            name, line, have = other, other + line[len(name):], installed(other)
        if have is not None and compatible(have, req["op"], req["version"]):
            say("keeping %s %s (asked %s)" % (name, have, req["line"]))
        else:
            missing.append(line)
    if not missing:
        return
    say("installing " + " ".join(missing))
    # pip's own lines (Collecting, Downloading, Installing, Successfully installed) go out as
    # they come: a minute of installs must not look like a hang at home
    cmd = [sys.executable, "-m", "pip", "install", "--progress-bar", "off",
           "--disable-pip-version-check"]
    proc = subprocess.Popen(cmd + CONFIG["pip_options"] + missing, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    tail = []
    for line in proc.stdout:
        line = line.rstrip()
        if not line:
            continue
        tail = (tail + [line])[-30:]
        if not line.startswith(("Requirement already satisfied", " ")):
            say("pip: " + line)
    if proc.wait() != 0:
        fail(3, "pip could not install %s: %s" % (" ".join(missing), "\n".join(tail)[-1500:]))
'''
