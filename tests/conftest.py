import os

# Cheap key derivation and an isolated cache for every test (set before tuckbox is used).
os.environ["TUCKBOX_TEST_CHEAP_KDF"] = "1"
