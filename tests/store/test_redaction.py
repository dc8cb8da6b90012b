"""hpo.store.storage.redact: the one redaction of every storage URL hpo prints or stores.

A table of the URL forms hpo meets, then a property: whatever the password (any printable
text, `@ : / ? # % &` included) and wherever the URL carries it, redact() never shows it.
"""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hpo.errors import HpoError
from hpo.store import grpc
from hpo.store.storage import MALFORMED, parse_url, redact, scrub

PW = "s3cret-pw"

# (url, what redact shows); PW never in what it shows
REDACTED = [
    ("user-info", f"postgresql+psycopg://hpo:{PW}@db.local:5432/hpo", "postgresql+psycopg://hpo:***@db.local:5432/hpo"),
    (
        "query",
        f"postgresql+psycopg://hpo@db.local/hpo?password={PW}",
        "postgresql+psycopg://hpo@db.local/hpo?password=***",
    ),
    (
        "query-then-more",
        f"postgresql://hpo@h/db?password={PW}&sslmode=require",
        "postgresql://hpo@h/db?password=***",
    ),
    (
        "query-not-first",
        f"postgresql://hpo@h/db?sslmode=require&password={PW}",
        "postgresql://hpo@h/db?sslmode=require&password=***",
    ),
    ("sslpassword", f"postgresql://hpo:{PW}@h/db?sslpassword={PW}x", "postgresql://hpo:***@h/db?sslpassword=***"),
    ("query-key-case", f"postgresql://hpo@h/db?PASSWORD={PW}", "postgresql://hpo@h/db?PASSWORD=***"),
    (
        "options-value",
        f"postgresql://hpo@h/db?options=-c password={PW}",
        "postgresql://hpo@h/db?options=-c password=***",
    ),
    (
        "options-value-encoded",
        f"postgresql://hpo@h/db?options=-c%20password%3D{PW}&sslmode=require",
        "postgresql://hpo@h/db?options=-c%20password%3D***",
    ),
    ("at-unencoded", f"postgresql://hpo:p@{PW}@h/db", "postgresql://hpo:***@h/db"),
    ("at-in-query-password", f"postgresql://hpo@h/db?password=p@{PW}", "postgresql://***"),
    ("percent-encoded", f"postgresql://hpo:{quote('p@' + PW, safe='')}@h/db", "postgresql://hpo:***@h/db"),
    ("colon-slash-in-password", f"postgresql://hpo:a:/?#{PW}@h/db", "postgresql://hpo:***@h/db"),
    ("no-user-name", f"postgresql://:{PW}@h/db", "postgresql://:***@h/db"),
    ("unclear-user-name", f"postgresql://a/b:{PW}@h/db", "postgresql://***@h/db"),
    ("grpc-user-info", f"grpc://user:{PW}@127.0.0.1:13000", "grpc://user:***@127.0.0.1:13000"),
    ("grpc-malformed", f"grpc://user:{PW}@host/x", "grpc://user:***@host/x"),
    ("malformed-port", f"postgresql://hpo:{PW}@h:notaport/db", "postgresql://hpo:***@h:notaport/db"),
    ("malformed-ipv6", f"postgresql://hpo:{PW}@[::1/db", "postgresql://hpo:***@[::1/db"),
    ("no-scheme", f"hpo:{PW}@h/db", MALFORMED),
    ("space-in-scheme", f"post gres://hpo:{PW}@h/db", MALFORMED),
    ("unsupported-scheme", f"mysql://hpo:{PW}@h/db", "mysql://***"),
    ("not-a-scheme", f"hpo://{PW}@h/db", "hpo://***"),
    ("malformed-nothing-to-mask", f"postgresql://hpo:{PW}/db", MALFORMED),
]
UNCHANGED = [
    "sqlite:///hpo.db",
    "sqlite:////tmp/some@where/hpo.db",
    "sqlite:///:memory:",
    "postgresql+psycopg://postgres@127.0.0.1:5432/hpo",
    "postgresql://hpo@h/db?passfile=/home/hpo/.pgpass&sslmode=require",
    "grpc://127.0.0.1:13000",
]


@pytest.mark.parametrize(("url", "shown"), [case[1:] for case in REDACTED], ids=[case[0] for case in REDACTED])
def test_redact_hides_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert PW not in redact(url)


@pytest.mark.parametrize("url", UNCHANGED)
def test_redact_leaves_a_url_without_a_password_unchanged(url: str) -> None:
    assert redact(url) == url


def test_scrub_removes_pieces_of_the_password_from_a_driver_message() -> None:
    url = f"postgresql://hpo:p@{PW}@127.0.0.1/db"
    # what psycopg says of that URL: the rest of the password taken for a host name
    message = f"failed to resolve host '{PW}@127.0.0.1': [Errno -2] Name or service not known"
    assert PW not in scrub(message, url)
    assert scrub("connection refused", url) == "connection refused"


def test_an_unencoded_at_is_refused_before_the_driver_sees_it() -> None:
    with pytest.raises(HpoError, match="more than one @") as raised:
        parse_url(f"postgresql://hpo:p@{PW}@h/db")
    assert PW not in str(raised.value)


@pytest.mark.parametrize("url", [f"grpc://user:{PW}@host/x", f"grpc://user:{PW}@host"])
def test_grpc_errors_show_the_redacted_url(url: str) -> None:
    with pytest.raises(HpoError) as raised:
        grpc.address(url, redact(url))
    assert PW not in str(raised.value)


# --------------------------------------------------------------------------------------------------
# The property: any password, any form

# printable, no whitespace; `*` left out so that a password cannot be read into the *** mask
ALPHABET = "".join(sorted(set(string.printable) - set(string.whitespace) - {"*"}))
FORMS = {
    "user-info": "postgresql+psycopg://hpo:{pw}@db.local:5432/hpo",
    "user-info-query": "postgresql://hpo:{pw}@db.local/hpo?sslmode=require",
    "grpc": "grpc://worker:{pw}@10.0.0.7:13000",
    "no-user": "postgresql://:{pw}@db.local/hpo",
    "query": "postgresql+psycopg://hpo@db.local/hpo?password={pw}",
    "query-then-more": "postgresql://hpo@db.local/hpo?password={pw}&sslmode=require",
    "query-after-more": "postgresql://hpo@db.local/hpo?sslmode=require&password={pw}",
    "sslpassword": "postgresql://hpo@db.local/hpo?sslpassword={pw}&passfile=/x",
    "malformed-port": "postgresql://hpo:{pw}@db.local:port/hpo",
    "malformed-scheme": "postgresql:/hpo:{pw}@db.local/hpo",
    "no-scheme": "hpo:{pw}@db.local/hpo",
    "unsupported": "mysql://hpo:{pw}@db.local/hpo",
    "sqlite": "sqlite:///tmp/hpo.db?password={pw}",
}


@settings(max_examples=400, deadline=None, database=None)
@given(
    password=st.text(alphabet=ALPHABET, min_size=6, max_size=24),
    form=st.sampled_from(sorted(FORMS)),
    encoded=st.booleans(),
)
def test_no_password_survives_redaction(password: str, form: str, encoded: bool) -> None:
    written = quote(password, safe="") if encoded else password
    url = FORMS[form].format(pw=written)
    # the password is in the URL once, as the password: not by chance in the rest of it
    assume(url.count(password) <= 1 and url.count(written) == 1)
    shown = redact(url)
    assert password not in shown
    assert written not in shown
