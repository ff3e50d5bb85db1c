"""Tests for the secret scanner every extracted sample passes through."""

from __future__ import annotations

import base64
import json
import random
import re
import string
import warnings

import pytest

from core.secrets import SECRET_PATTERNS
from tasks.extract.secrets import Finding, SecretScanner

_RNG = random.Random(20240611)
_ALNUM = string.ascii_letters + string.digits


def _rand(n: int, alphabet: str = _ALNUM) -> str:
    """A reproducible random string that holds at least one digit and one letter."""
    while True:
        token = "".join(_RNG.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
            return token


def _b64url(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# Fake credentials are assembled at run time so that this file holds no literal secret itself.
_JWT = ".".join(
    [_b64url({"alg": "HS256", "typ": "JWT"}), _b64url({"sub": "1234567890", "iat": 1516239022}), _rand(43)]
)
_LETTERS36 = "".join(_RNG.choice(string.ascii_letters) for _ in range(36))  # no digit: found by its prefix
_PEM_BODY = "\n".join(_rand(64, _ALNUM + "+/") for _ in range(3))

# name -> (text, kind the scanner must report)
PLANTED: dict[str, tuple[str, str]] = {
    "aws_key_id": ('aws_access_key_id = "' + "AKIA" + "Z7Q2LX4MRT8NW3KB" + '"', "AWS Access Key"),
    "aws_secret_key": (f'aws_secret_access_key = "{_rand(40, _ALNUM + "/+")}"', "AWS Secret Key"),
    "github_pat_classic": (f"token: {'ghp' + '_' + _rand(36)}", "GitHub Token"),
    "github_pat_fine": (f"GH_TOKEN={'github' + '_pat_' + _rand(22) + '_' + _rand(59)}", "GitHub Token"),
    "github_token_no_digits": (f"token = {'gho' + '_' + _LETTERS36}", "GitHub Token"),
    "gitlab_pat": (f"git clone https://gitlab.com/x.git  # {'glpat' + '-' + _rand(20)}", "GitLab Token"),
    "slack_token": (f"SLACK_BOT = '{'xoxb' + '-123456789012-1234567890123-' + _rand(24)}'", "Slack Token"),
    "slack_webhook": (
        f"url = 'https://hooks.slack.com/services/{'T0ABCDEF12/B0ABCDEF34/' + _rand(24)}'",
        "Slack Webhook",
    ),
    "stripe_live": (f"stripe.api_key = '{'sk' + '_live_' + _rand(24)}'", "Stripe Access Key"),
    "google_api_key": (f"maps_key = '{'AI' + 'za' + _rand(35)}'", "Google API Key"),
    "openai_key": (f'client = OpenAI(api_key="{"sk" + "-proj-" + _rand(48)}")', "OpenAI Token"),
    "hf_token": (f"HF_TOKEN={'hf' + '_' + _rand(34)}", "Hugging Face Token"),
    "npm_token": (f"//registry.npmjs.org/:_authToken={'npm' + '_' + _rand(36)}", "NPM Token"),
    "pypi_token": (f"password = {'pypi-' + 'AgEIcHlwaS5vcmc' + _rand(60)}", "PyPI Token"),
    "sendgrid_key": (f"SENDGRID = '{'SG.' + _rand(22) + '.' + _rand(43)}'", "SendGrid API Key"),
    "private_key_pem": (
        "-----BEGIN RSA " + "PRIVATE KEY-----\n" + _PEM_BODY + "\n-----END RSA PRIVATE KEY-----",
        "Private Key",
    ),
    "password_python": ('db_password = "hunter2-Correct"', "Secret Keyword"),
    "password_js": ("const dbPassword = 'S3cure-Pa55';", "Secret Keyword"),
    "password_yaml": ("database:\n  password: Tr0ub4dor&3", "Secret Keyword"),
    "password_yaml_quoted": ('  password: "hunter2pass"', "Secret Keyword"),
    "password_env": ("export DB_PASSWORD=Tr0ub4dor3x", "Secret Keyword"),
    "pwd_env": ("MYSQL_PWD=m00n-Shine", "Secret Keyword"),
    "secret_attribute": ('app.secret = "blue-Sky-42x"', "Secret Keyword"),
    "password_annotated": ('    password: str = "hunter2pass"', "Secret Keyword"),
    "jwt": (f"Authorization: Bearer {_JWT}", "JSON Web Token"),
    "url_credentials": (
        'DATABASE_URL = "postgres://admin:Xy7pQ2wLm9@db.internal:5432/app"',
        "Basic Auth Credentials",
    ),
    "azure_storage": (
        f"conn = 'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={_rand(86, _ALNUM + '+/')}=='",
        "Azure Storage Account Key",
    ),
    "random_token_assigned": (f'WEBHOOK_SIGNING = "{_rand(40)}"', "High Entropy String"),
    "random_token_in_diff": (f"+    signing = '{_rand(40, _ALNUM + '-_')}'", "High Entropy String"),
    "hex_api_key": (f'ANALYTICS_API_KEY = "{_rand(32, "0123456789abcdef")}"', "Hex High Entropy String"),
    "twilio_plugin_only": (f"twilio = '{'SK' + _rand(32, '0123456789abcdef')}'", "Twilio API Key"),
}

CLEAN: dict[str, str] = {
    "python_code": (
        "def get_user(self, user_id: int) -> User:\n"
        '    """Return the user with this id."""\n'
        "    return self.session.query(User).filter(User.id == user_id).first()\n"
    ),
    "pass_statement": "class Empty:\n    pass\n",
    "commit_with_sha": "Revert 3f786850e387550fdab836ed7e6dc881de23001b\n\nThis reverts the token fix.",
    "poetry_lock": f'files = [{{file = "a-1.0.tar.gz", hash = "sha256:{"8a2d8f3c0f4a1b9c" * 4}"}}]',
    "npm_lock": '      "integrity": "sha512-' + base64.b64encode(bytes(range(64))).decode() + '",',
    "go_sum": "github.com/x/y v1.0.0 h1:" + base64.b64encode(bytes(range(100, 132))).decode(),
    "uuid": 'request_id = "123e4567-e89b-12d3-a456-426614174000"',
    "long_identifier": "out = compute_the_very_long_function_name_for_embedding_layer_norm_v2(x)",
    "camel_class": "model = Qwen2_5OmniForConditionalGeneration.from_pretrained(path)",
    "code_identifiers": (
        "class RTDetrV2FrozenBatchNorm2d(nn.Module):\n    self.mlp = Qwen3OmniMoeCode2WavMlp(config)\n"
    ),
    "model_id": 'tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")',
    "import_path": "from transformers.models.bert.modeling_bert import BertForSequenceClassification2D",
    "url_plain": 'URL = "https://github.com/huggingface/transformers/blob/main/src/transformers/models/bert"',
    "url_template": 'template = "{schema}://{user}:{password}@{host}/{targets}"',
    "url_placeholder": "Connect with postgres://user:pass@localhost:5432/db",
    "password_references": (
        "password = os.environ['DB_PASSWORD']\n"
        "password: str\n"
        "password = None\n"
        "self.password = password\n"
        "secret_key = settings.SECRET_KEY\n"
    ),
    "password_prose": 'parser.add_argument("--password", help="The password for the database user")',
    "field_names": 'FIELDS = {"password": "password", "api_key": "OPENAI_API_KEY"}',
    "base64_prose": "Base64Encoding is documented in RFC4648 and used by ContentTransferEncodings.",
}

_SCANNER = SecretScanner()


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_secret_is_detected_with_its_kind(name: str) -> None:
    text, kind = PLANTED[name]
    kinds = {finding.kind for finding in _SCANNER.scan(text)}
    assert kind in kinds, kinds
    assert "Scanner Error" not in kinds
    assert _SCANNER.first_reason(text) is not None


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_clean_text_is_not_flagged(name: str) -> None:
    assert _SCANNER.scan(CLEAN[name]) == []
    assert _SCANNER.first_reason(CLEAN[name]) is None


def test_line_numbers_are_one_based_and_exact() -> None:
    lines = [
        "# Ünïcödé header ✓ 🚀 so byte and character offsets differ",
        "import os",
        PLANTED["aws_key_id"][0],
        "",
        "def f():\r",
        "    return 1",
        PLANTED["password_python"][0],
        "x = 'done'",
    ]
    findings = _SCANNER.scan("\n".join(lines))
    assert [finding.line for finding in findings] == sorted(finding.line for finding in findings)
    assert {finding.line for finding in findings} == {3, 7}
    assert Finding(3, "AWS Access Key") in findings and Finding(7, "Secret Keyword") in findings


def test_first_reason_is_the_kind_of_the_earliest_finding() -> None:
    text = "\n".join([CLEAN["python_code"], PLANTED["private_key_pem"][0], PLANTED["aws_key_id"][0]])
    assert _SCANNER.first_reason(text) == "Private Key"
    assert _SCANNER.first_reason("\n".join(CLEAN.values())) is None
    assert _SCANNER.first_reason("") is None


def test_entropy_threshold_is_honoured() -> None:
    text = PLANTED["random_token_assigned"][0]
    assert _SCANNER.first_reason(text) == "High Entropy String"
    assert SecretScanner(entropy_threshold=6.0).first_reason(text) is None  # 40 chars carry < 5.4 bits


@pytest.mark.parametrize("pattern", SECRET_PATTERNS)
def test_secret_pattern_compiles_and_matches_planted_but_not_clean(pattern: str) -> None:
    regex = re.compile(pattern)
    assert regex.groups == 0  # pandas `str.contains` warns about capture groups
    assert any(regex.search(text) for text, _ in PLANTED.values())
    assert not [name for name, text in CLEAN.items() if regex.search(text)]


def test_every_pattern_hit_is_also_a_scanner_finding() -> None:
    # Validation re-checks whole samples with SECRET_PATTERNS: the scanner must never pass what they match.
    aws_secret_split = 'aws_secret_access_key:\n  "' + "x" * 40 + '"'  # across lines it is not one match
    for text in [text for text, _ in PLANTED.values()] + [aws_secret_split]:
        flagged = {finding.line for finding in _SCANNER.scan(text)}
        for pattern in SECRET_PATTERNS:
            for match in re.finditer(pattern, text):
                assert "\n" not in match.group(), pattern
                assert text.count("\n", 0, match.start()) + 1 in flagged, match.group()


def test_patterns_work_with_pandas_str_contains() -> None:
    pd = pytest.importorskip("pandas")
    texts = pd.Series([text for text, _ in PLANTED.values()] + list(CLEAN.values()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hits = [texts.str.contains(pattern, regex=True) for pattern in SECRET_PATTERNS]
    assert not any(hit[len(PLANTED) :].any() for hit in hits)
    assert all(hit[: len(PLANTED)].any() for hit in hits)


def test_never_raises_on_garbage_and_huge_lines() -> None:
    rng = random.Random(7)
    garbage = "".join(chr(rng.randrange(0, 0x110000)) for _ in range(20_000))  # lone surrogates, NULs
    for text in (garbage, "\x00" * 1000, "\n" * 1000, "\ud800password = 'hunter2x'\udfff", "=" * 100_000):
        _SCANNER.scan(text)
        _SCANNER.first_reason(text)
    secret = PLANTED["aws_key_id"][0]
    long_line = "a = [" + "1, " * 400_000 + f"]; {secret}"
    findings = _SCANNER.scan(long_line)
    assert Finding(1, "AWS Access Key") in findings  # found past the 4000-char windows' first one


def test_detect_secrets_plugins_run_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    requests = pytest.importorskip("requests")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a secret scan must not touch the network")

    monkeypatch.setattr(requests.sessions.Session, "request", no_network)
    for name in ("slack_token", "stripe_live", "twilio_plugin_only", "aws_key_id"):
        text, kind = PLANTED[name]
        kinds = {finding.kind for finding in SecretScanner().scan(text)}
        assert kind in kinds and "Scanner Error" not in kinds


def test_a_megabyte_of_clean_source_has_no_finding() -> None:
    # speed is measured by benchmarks, not asserted here; this checks the prefilter's clean path
    source = CLEAN["python_code"] + CLEAN["model_id"] + "\n" + CLEAN["commit_with_sha"] + "\n"
    text = source * (1_000_000 // len(source))
    assert _SCANNER.first_reason(text) is None
    assert _SCANNER.scan(text) == []
