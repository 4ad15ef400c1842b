"""--include / --exclude patterns (tuckbox.patterns), shared by backup and restore."""

from __future__ import annotations

from tuckbox.patterns import Patterns


def test_names_match_at_any_depth():
    p = Patterns(["*.tmp", ".cache"])
    assert p.match(b"/home/ann/x.tmp") and p.match(b"/home/ann/.cache") and p.match(b"/.cache")
    assert not p.match(b"/home/ann/x.tmpl") and not p.match(b"/home/ann/.cache2")


def test_a_leading_slash_anchors_at_the_root():
    p = Patterns(["/home/*/.cache"])
    assert p.match(b"/home/ann/.cache") and not p.match(b"/srv/home/ann/.cache")


def test_a_slash_inside_matches_the_end_of_the_path_at_a_component_boundary():
    p = Patterns([".cache/thumbnails", "src/build"])
    assert p.match(b"/home/ann/.cache/thumbnails") and p.match(b"/x/src/build")
    assert not p.match(b"/x/mysrc/build") and not p.match(b"/x/src/build2")


def test_a_trailing_slash_is_the_same_pattern():
    for pattern in (".cache/", "/home/ann/.cache/", "ann/.cache/"):
        assert Patterns([pattern]).match(b"/home/ann/.cache"), pattern


def test_no_patterns_match_nothing():
    assert not Patterns([]) and not Patterns(None).match(b"/x")
    assert Patterns(["/"]).match(b"/")


def test_the_root_matches_everything() -> None:
    for pattern in ("/", "//"):
        p = Patterns([pattern])
        assert p.match(b"/tmp") and p.match(b"/home/ann/.cache/x"), pattern


def test_an_empty_pattern_matches_nothing() -> None:
    assert not Patterns([""]) and not Patterns([""]).match(b"/tmp")


def test_a_name_as_ls_shows_it_matches_it():
    """ls shows a byte that is not UTF-8 as \\xff and a backslash as \\\\: a pattern written so matches the
    name, and one written as the name is on disk (a backslash in it) still does."""
    assert Patterns(["n\\xff"]).match(b"/a/n\xff") and Patterns(["/a/n\\xff"]).match(b"/a/n\xff")
    assert Patterns(["*\\xff"]).match(b"/a/n\xff") and Patterns(["a/n\\xff/"]).match(b"/x/a/n\xff")
    assert Patterns(["back\\\\slash"]).match(b"/a/back\\slash")  # as shown
    assert Patterns(["back\\xffslash"]).match(b"/a/back\\xffslash")  # as typed
    assert Patterns(["dos\\path"]).match(b"/a/dos\\path")  # no escape at all
    assert not Patterns(["n\\xff"]).match(b"/a/n\xfe") and not Patterns(["n\\xff"]).match(b"/a/n")


def test_dots_and_doubled_slashes_are_read_as_in_a_path():
    """'/srv//x', '/srv/./x', 'a/b/../x' and 'x//' matched nothing (a path never holds them): each is now the
    pattern it spells."""
    for pattern in ("/srv//x", "/srv/./x", "/srv/y/../x", "//srv/x/", "srv/./x", "srv//x", "a/../srv/x", "./x"):
        p = Patterns([pattern])
        assert p.match(b"/srv/x"), pattern
        assert not p.match(b"/srv/y"), pattern
    assert Patterns(["/.."]).match(b"/tmp") and Patterns(["/a/.."]).match(b"/tmp")  # (the root)
    assert not Patterns(["."]) and not Patterns(["a/.."])  # (nothing: the CLI makes these absolute)


def test_a_wildcard_character_in_a_name_is_matched_in_brackets():
    """As README says: 'report[1].pdf' is a character class; '[[]' is the character itself."""
    assert Patterns(["report[[]1].pdf"]).match(b"/x/report[1].pdf") and not Patterns(["report[1].pdf"]).match(b"/x/report[1].pdf")
    assert Patterns(["a[*]b"]).match(b"/a*b") and not Patterns(["a[*]b"]).match(b"/axb")
