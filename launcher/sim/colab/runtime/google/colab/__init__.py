"""A stand-in for Colab's `google.colab` package, for notebooks run by the launch Colab sim.

Only what generated notebooks use: `drive.mount` / `drive.flush_and_unmount` (My Drive of the
Drive emulator, mirrored both ways like Colab's Drive mount) and `userdata.get` (Colab's
secrets). The sim puts the folder above `google/` on the kernel's PYTHONPATH (`google` stays a
namespace package, so the google-* libraries installed beside it still import) and passes its
settings as COLAB_SIM_* environment variables. Standard library only: the kernel's Python may
not have launch installed.
"""
