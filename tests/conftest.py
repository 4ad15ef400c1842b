import os

# Cheap key derivation and an isolated cache for every test (set before tuckbox is used).
os.environ["TUCKBOX_TEST_CHEAP_KDF"] = "1"

import sys

# the archiver raises the limit for deep trees; do it up front so hypothesis does not warn
sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
