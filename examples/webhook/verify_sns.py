"""Verify an SNS HTTP(S) message before a lab's webhook acts on it.

SNS posts JSON to the subscribed URL; anyone who learns the URL can post too, so a receiver
must check the signature (AWS docs: "Verifying the signatures of Amazon SNS messages") and,
because any SNS topic can sign, also that the message comes from the expected topic:

    message = json.loads(request_body)
    verify(message, topic_arn=OUR_TOPIC_ARN)          # SignatureError -> answer 403, do nothing
    if message["Type"] == "SubscriptionConfirmation":
        urllib.request.urlopen(confirm_url(message, topic_arn=OUR_TOPIC_ARN), timeout=10)

Depends only on the standard library and `cryptography`.
"""
from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# The certificate is trusted only because it comes over TLS from an AWS SNS host, so the URL is
# the whole trust anchor: a lookalike host, userinfo or port trick would let a sender pick the key.
SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
# Version 2 (SHA256) only: the stack's topic sets SignatureVersion "2". Version 1 signs with SHA1,
# which a forger can attack; a topic left at that default must be set to 2, not accepted.
HASHES = {"2": hashes.SHA256}


class SignatureError(ValueError):
    """The message is not a genuine SNS message (or not one this receiver accepts)."""


def sns_host(url: object) -> str:
    """The SNS host of an https URL, or SignatureError. Parsed, not pattern-matched on the whole string."""
    # whitespace and control characters are refused outright: urlsplit silently drops some of them
    if not isinstance(url, str) or not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise SignatureError(f"not a plain URL: {url!r}")
    parts = urllib.parse.urlsplit(url)
    # netloc must be the bare host: this refuses userinfo ("user@"), any port and odd case or dots
    if parts.scheme != "https" or not SNS_HOST.fullmatch(parts.netloc):
        raise SignatureError(f"not an https URL on an SNS host: {url!r}")
    return parts.netloc


def check_cert_url(url: object) -> str:
    """The certificate URL itself, if it is https://sns.<region>.amazonaws.com[.cn]/....pem."""
    sns_host(url)
    if "?" in url or "#" in url or not urllib.parse.urlsplit(url).path.endswith(".pem"):
        raise SignatureError(f"not a .pem certificate URL: {url!r}")
    return url


_cache: dict[str, bytes] = {}


def default_fetch(url: str) -> bytes:
    """The PEM at url, fetched over verified TLS. Only called after check_cert_url; cached by URL."""
    check_cert_url(url)  # again, so this function is safe to call on its own
    if url not in _cache:
        with urllib.request.urlopen(url, timeout=10) as response:
            _cache[url] = response.read(65536)  # a certificate is a few KiB; don't read more
    return _cache[url]


def canonical_string(message: dict) -> bytes:
    """The bytes SNS signed: "key\\nvalue\\n" for each signed key of the message's Type, in order."""
    keys = SIGNED_KEYS.get(message.get("Type"))
    if keys is None:
        raise SignatureError(f"unknown message Type: {message.get('Type')!r}")
    out = []
    for key in keys:
        if key == "Subject" and message.get(key) is None:
            continue  # the only optional key: SNS signs it only when the publisher set one
        value = message.get(key)
        if not isinstance(value, str):
            raise SignatureError(f"missing or non-string {key}")
        out.append(f"{key}\n{value}\n")
    return "".join(out).encode("utf-8")


def verify(message: dict, fetch_pem=default_fetch, *, topic_arn: str) -> None:
    """Return if message is signed by SNS and comes from topic_arn; else SignatureError. The topic
    is required: any SNS topic can sign, so a signature alone says nothing about who sent it."""
    if not topic_arn:
        raise SignatureError("no topic ARN to check the message against: give the stack's TopicArn")
    if not isinstance(message, dict):
        raise SignatureError("message is not a JSON object")
    signed = canonical_string(message)  # checks Type and the signed keys first
    algorithm = HASHES.get(message.get("SignatureVersion"))
    if message.get("SignatureVersion") == "1":
        raise SignatureError("SignatureVersion 1 (SHA1) is refused: set the topic's SignatureVersion to 2")
    if algorithm is None:
        raise SignatureError(f"unknown SignatureVersion: {message.get('SignatureVersion')!r}")
    url = check_cert_url(message.get("SigningCertURL"))  # before any request is made
    try:
        signature = base64.b64decode(message.get("Signature") or "", validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise SignatureError("Signature is not base64") from e
    try:
        key = x509.load_pem_x509_certificate(fetch_pem(url)).public_key()
    except Exception as e:  # network, HTTP or PEM errors: all mean "cannot be verified"
        raise SignatureError(f"cannot load the signing certificate: {e}") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("signing certificate is not an RSA key")
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except Exception as e:  # InvalidSignature, or a signature of the wrong length
        raise SignatureError("signature does not match the message") from e
    if message["TopicArn"] != topic_arn:
        raise SignatureError(f"message is from another topic: {message['TopicArn']!r}")


def confirm_url(message: dict, fetch_pem=default_fetch, *, topic_arn: str) -> str:
    """The SubscribeURL to GET, only for a verified SubscriptionConfirmation on the certificate's host."""
    verify(message, fetch_pem, topic_arn=topic_arn)
    if message["Type"] != "SubscriptionConfirmation":
        raise SignatureError(f"not a SubscriptionConfirmation: {message['Type']!r}")
    url = message["SubscribeURL"]
    try:
        same_host = sns_host(url) == sns_host(message["SigningCertURL"])
    except SignatureError:
        same_host = False
    if not same_host:
        raise SignatureError(f"SubscribeURL is not on the certificate's SNS host: {url!r}")
    return url
