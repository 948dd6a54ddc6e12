"""Task functions that import nothing heavy.

Workers import a task's module to unpickle it; a spawn or forkserver worker that had to
import a test module (and pytest with it) for every pool would make pool-heavy tests slow.
"""

import os


def square(x):
    return x * x


def fail_on_7(x):
    if x == 7:
        raise ValueError("task 7 fails")
    return x


def exit_on_7(x):
    if x == 7:
        os._exit(1)
    return x


def affine(x):
    return 3 * x + 1


def double_rows(block):
    return block * 2
