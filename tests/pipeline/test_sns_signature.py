"""examples/webhook/verify_sns.py: messages signed as SNS signs them pass, anything else is refused.
Keys and certificates are made here; fetch_pem is injected, so no network."""
from __future__ import annotations

import base64
import datetime
import importlib.util
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("verify_sns", ROOT / "examples" / "webhook" / "verify_sns.py")
verify_sns = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(verify_sns)
SignatureError = verify_sns.SignatureError

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
TOPIC = "arn:aws:sns:us-east-1:123456789012:cellpaint-Topic"


def make_signer():
    """An RSA key and a self-signed certificate for it, in PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signer():
    return make_signer()


@pytest.fixture(scope="module")
def other_signer():
    return make_signer()


class Fetch:
    """A fetch_pem that serves one PEM for CERT_URL and records every URL asked for."""

    def __init__(self, pem):
        self.pem, self.calls = pem, []

    def __call__(self, url):
        self.calls.append(url)
        assert url == CERT_URL
        return self.pem


def sign(key, message, version="2"):
    """Sign as SNS does: the canonical string, PKCS1v15, SHA1 (v1) or SHA256 (v2), base64."""
    message = dict(message, SignatureVersion=version, SigningCertURL=message.get("SigningCertURL", CERT_URL))
    keys = verify_sns.SIGNED_KEYS[message["Type"]]
    signed = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message).encode()
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    message["Signature"] = base64.b64encode(key.sign(signed, padding.PKCS1v15(), algorithm)).decode()
    return message


def notification(**extra):
    return {"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": TOPIC,
            "Subject": "cellpaint: demo/cell 1 is restored", "Message": '{"status": "succeeded", "pair": "demo/cell 1"}',
            "Timestamp": "2026-11-26T12:00:00.000Z", **extra}


def confirmation():
    return {"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e2",
            "TopicArn": TOPIC, "Message": "You have chosen to subscribe to the topic " + TOPIC,
            "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" + TOPIC
                            + "&Token=2336412f",
            "Timestamp": "2026-11-26T12:00:00.000Z"}


def test_canonical_string_order_and_optional_subject():
    msg = notification()
    assert verify_sns.canonical_string(msg) == (
        f"Message\n{msg['Message']}\nMessageId\n{msg['MessageId']}\nSubject\n{msg['Subject']}\n"
        f"Timestamp\n{msg['Timestamp']}\nTopicArn\n{TOPIC}\nType\nNotification\n").encode()
    del msg["Subject"]
    assert b"Subject" not in verify_sns.canonical_string(msg)
    assert verify_sns.canonical_string(confirmation()).split(b"\n")[::2] == [
        b"Message", b"MessageId", b"SubscribeURL", b"Timestamp", b"Token", b"TopicArn", b"Type", b""]


def test_genuine_notification_v2(signer):
    key, pem = signer
    fetch = Fetch(pem)
    assert verify_sns.verify(sign(key, notification()), fetch, topic_arn=TOPIC) is None
    assert fetch.calls == [CERT_URL]
    no_subject = notification()
    del no_subject["Subject"]
    verify_sns.verify(sign(key, no_subject), fetch, topic_arn=TOPIC)


def test_sha1_signatures_and_a_missing_topic_are_refused(signer):
    key, pem = signer
    with pytest.raises(SignatureError, match="SignatureVersion 1 .SHA1. is refused"):
        verify_sns.verify(sign(key, notification(), version="1"), Fetch(pem), topic_arn=TOPIC)
    with pytest.raises(SignatureError, match="no topic ARN"):
        verify_sns.verify(sign(key, notification()), Fetch(pem), topic_arn="")
    # a v1 signature does not pass as v2: the hash named by the version is the one used
    msg = sign(key, notification(), version="1")
    msg["SignatureVersion"] = "2"
    with pytest.raises(SignatureError, match="does not match"):
        verify_sns.verify(msg, Fetch(pem), topic_arn=TOPIC)


def test_genuine_subscription_confirmation(signer):
    key, pem = signer
    msg = sign(key, confirmation())
    verify_sns.verify(msg, Fetch(pem), topic_arn=TOPIC)
    assert verify_sns.confirm_url(msg, Fetch(pem), topic_arn=TOPIC) == msg["SubscribeURL"]


def test_confirm_url_refuses_other_hosts_types_and_topics(signer):
    key, pem = signer
    elsewhere = sign(key, dict(confirmation(), SubscribeURL="https://evil.example/?Action=ConfirmSubscription"))
    with pytest.raises(SignatureError, match="SubscribeURL"):
        verify_sns.confirm_url(elsewhere, Fetch(pem), topic_arn=TOPIC)
    other_region = sign(key, dict(confirmation(), SubscribeURL="https://sns.eu-west-1.amazonaws.com/?Action=x"))
    verify_sns.verify(other_region, Fetch(pem), topic_arn=TOPIC)  # genuine, but the URL is not on the certificate's host
    with pytest.raises(SignatureError, match="SubscribeURL"):
        verify_sns.confirm_url(other_region, Fetch(pem), topic_arn=TOPIC)
    with pytest.raises(SignatureError, match="not a SubscriptionConfirmation"):
        verify_sns.confirm_url(sign(key, notification()), Fetch(pem), topic_arn=TOPIC)
    with pytest.raises(SignatureError, match="another topic"):
        verify_sns.confirm_url(sign(key, confirmation()), Fetch(pem), topic_arn=TOPIC + "-other")


def test_tampered_message_refused(signer):
    key, pem = signer
    msg = sign(key, notification())
    msg["Message"] = msg["Message"].replace("succeeded", "succeedeD")
    with pytest.raises(SignatureError, match="does not match"):
        verify_sns.verify(msg, Fetch(pem), topic_arn=TOPIC)


def test_signed_by_another_key_refused(signer, other_signer):
    key, _ = signer
    _, other_pem = other_signer
    fetch = Fetch(other_pem)
    with pytest.raises(SignatureError, match="does not match"):
        verify_sns.verify(sign(key, notification()), fetch, topic_arn=TOPIC)
    assert fetch.calls == [CERT_URL]


@pytest.mark.parametrize("url", [
    "http://sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
    "https://user@sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com:8443/x.pem",
    "file:///etc/passwd",
    "https://sns.us-east-1.amazonaws.com/x.txt",
    "https://sns.us-east-1.amazonaws.com/x.pem?",
    "https://sns.us-east-1.amazon\taws.com/x.pem",
])
def test_foreign_cert_url_refused_before_fetch(signer, url):
    key, pem = signer
    fetch = Fetch(pem)
    with pytest.raises(SignatureError, match="URL"):
        verify_sns.verify(sign(key, notification(SigningCertURL=url)), fetch, topic_arn=TOPIC)
    assert fetch.calls == []
    with pytest.raises(SignatureError):
        verify_sns.default_fetch(url)  # refuses on its own too, before any request


def test_china_region_cert_url_accepted():
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
    assert verify_sns.check_cert_url(url) == url


@pytest.mark.parametrize("field, value, reason", [
    ("SignatureVersion", "3", "SignatureVersion"),
    ("SignatureVersion", 2, "SignatureVersion"),
    ("Type", "Notice", "Type"),
])
def test_unknown_version_or_type_refused(signer, field, value, reason):
    key, pem = signer
    fetch = Fetch(pem)
    msg = sign(key, notification())
    msg[field] = value
    with pytest.raises(SignatureError, match=reason):
        verify_sns.verify(msg, fetch, topic_arn=TOPIC)
    assert fetch.calls == []


@pytest.mark.parametrize("missing", ["Message", "MessageId", "Timestamp", "TopicArn", "Type",
                                     "SignatureVersion", "SigningCertURL", "Signature"])
def test_missing_keys_refused(signer, missing):
    key, pem = signer
    msg = sign(key, notification())
    del msg[missing]
    with pytest.raises(SignatureError):
        verify_sns.verify(msg, Fetch(pem), topic_arn=TOPIC)


def test_missing_confirmation_keys_and_bad_input_refused(signer):
    key, pem = signer
    for missing in ("SubscribeURL", "Token"):
        msg = sign(key, confirmation())
        del msg[missing]
        with pytest.raises(SignatureError, match=missing):
            verify_sns.verify(msg, Fetch(pem), topic_arn=TOPIC)
    for bad in (None, [], "a string"):
        with pytest.raises(SignatureError):
            verify_sns.verify(bad, Fetch(pem), topic_arn=TOPIC)
    msg = sign(key, notification())
    msg["Signature"] = "not base64!"
    with pytest.raises(SignatureError, match="base64"):
        verify_sns.verify(msg, Fetch(pem), topic_arn=TOPIC)


def test_unloadable_certificate_refused(signer):
    key, _ = signer
    with pytest.raises(SignatureError, match="certificate"):
        verify_sns.verify(sign(key, notification()), Fetch(b"not a pem"), topic_arn=TOPIC)
