"""Request bodies of the OpenAI-compatible, registry and seed routes, with OpenAI's bounds.

Unknown OpenAI fields (user, logit_bias, ...) are accepted and dropped, since SDKs send them; fields
forgeflow cannot honour (n > 1, tools) are refused instead of silently ignored.

The OpenAPI document states what is validated (tests/api/test_openapi_conformance.py holds the two
to each other): each rule about the request alone is a pydantic constraint, or spelled out in JSON
Schema where pydantic cannot check it (`not: latest`, path or source). Bodies are strict for the same
reason: a JSON `0` is not `false` and `"1"` is not a number, as the document says.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict

from core.registry import ALIAS, DEVICE, LATEST, NAME, SEMVER

Role = Literal["system", "developer", "user", "assistant"]
MAX_MESSAGES = 1024
MAX_INPUTS = 2048  # strings per embeddings request, as OpenAI (and the embedder) allow
MAX_TOKENS = 131_072


def _integral(value: Any) -> Any:
    """`2.0` as 2: JSON Schema counts a number without a fraction as an integer (strict pydantic does not)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# after the bounds in `Annotated`: before them, pydantic writes `ge`/`le` in the JSON schema, not `minimum`
INTEGRAL = BeforeValidator(_integral)
Text = Annotated[str, Field(min_length=1)]
# JSON's safe integers, not OpenAI's int64: a validator comparing doubles (JavaScript's, schemathesis's)
# cannot place a bound near 2**63, so the document could not say where int64 ends
Seed = Annotated[int, Field(ge=-(2**53 - 1), le=2**53 - 1), INTEGRAL]
Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(gt=0, le=1)]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS), INTEGRAL]
Penalty = Annotated[float, Field(ge=-2, le=2)]
# a version, or an alias standing for one (`latest` included: it names the newest registration)
VersionRef = Annotated[str, Field(pattern=f"{SEMVER.pattern}|{ALIAS.pattern}")]
NOT_LATEST: JsonDict = {"not": {"const": LATEST}}  # `latest` follows the newest registration by itself
# the OS refuses a NUL in a path; 4096 bytes is PATH_MAX
LocalPath = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]


def _surrogates(value: Any) -> Iterator[str]:
    """Where `value` holds a lone surrogate (JSON's `\\ud800` can spell one; UTF-8 cannot carry it)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:  # iterative: a deeply nested `config` must not exhaust the recursion limit
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                yield where or "body"
        elif isinstance(item, dict):
            stack += [(k, where) for k in item] + [(v, f"{where}.{k}".lstrip(".")) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, f"{where}.{i}".lstrip(".")) for i, v in enumerate(item)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Request(_Part):
    """A whole body: its text must be sendable on, as UTF-8, to a backend or the database."""

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        where = next(_surrogates(data), None)
        if where is not None:
            raise ValueError(f"{where}: text must be valid Unicode (it holds a lone surrogate, e.g. \\ud800)")
        return data


class _Command(_Request):
    """A registry command: a mistyped field is an error, not a silently ignored key."""

    model_config = ConfigDict(extra="forbid")


class TextPart(_Part):
    type: Literal["text"]
    text: str


class ChatMessage(_Part):
    role: Role
    content: str | list[TextPart] = Field(description="text, or a list of text parts")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Part):
    include_usage: bool = False


class _Sampling(_Request):
    model: str | None = Field(None, max_length=200, description="name, name:version or name:alias")
    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    n: Annotated[int, INTEGRAL] = Field(1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool | None = Field(
        None, description="llama.cpp's extension: generate max_tokens even past the end token (benchmarks)"
    )
    retrieval: bool | None = Field(
        None,
        description="forgeflow's extension: ground the answer in the model's repo index (default: on for "
        "a model trained from a repo, off for a base model); false turns it off",
    )

    def upstream(self) -> dict[str, Any]:
        """The sampling fields to forward (unset ones left to the backend's defaults)."""
        body = self.model_dump(
            exclude_none=True,
            exclude={"model", "n", "stream", "stream_options", "messages", "prompt", "retrieval"},
        )
        if self.stream:
            body["stream"] = True
            if self.stream_options is not None:
                body["stream_options"] = self.stream_options.model_dump()
        return body


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: MaxTokens | None = None

    def upstream(self) -> dict[str, Any]:
        body = super().upstream()
        body.pop("max_completion_tokens", None)
        if self.max_tokens is None and self.max_completion_tokens is not None:
            body["max_tokens"] = self.max_completion_tokens
        # the developer role is OpenAI's new name for system
        body["messages"] = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]
        return body


class CompletionRequest(_Sampling):
    # not empty: a model without a BOS token has nothing to continue from (llama.cpp fails the request)
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)] = Field(
        description="one prompt: a string, or a list holding one"
    )
    echo: bool = False

    def upstream(self) -> dict[str, Any]:
        body = super().upstream()
        body.pop("echo", None)
        body["prompt"] = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return body


class EmbeddingRequest(_Request):
    model: str | None = Field(None, max_length=200)
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description=f"a string or a list of up to {MAX_INPUTS} strings, none empty"
    )
    encoding_format: Literal["float", "base64"] = "float"  # base64: float32 little-endian

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class QueryRequest(_Request):
    prompt: Text
    model: str | None = Field(None, max_length=200)
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    retrieval: bool | None = Field(
        None,
        description="forgeflow's extension: ground the answer in the model's repo index (default: on for "
        "a model trained from a repo, off for a base model); false turns it off",
    )


class InferOptions(_Part):
    """The sampling options `/infer` forwards to a text-generation model; other keys are ignored."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    seed: Seed | None = None


class InferRequest(_Request):
    text: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description="a string, or a list of strings to embed (a text-generation model takes one)"
    )
    options: InferOptions = Field(default_factory=InferOptions)
    retrieval: bool | None = Field(
        None,
        description="forgeflow's extension: ground the answer in the model's repo index (default: on for "
        "a model trained from a repo, off for a base model); false turns it off",
    )


class RegisterRequest(_Command):
    # one of path and source, as a string: `required` alone would let `"path": null` through
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": [f], "properties": {f: {"type": "string"}}} for f in ("path", "source")]
        }
    )
    path: LocalPath | None = Field(
        None, description="a .gguf file, an export directory or an HF model directory"
    )
    source: LocalPath | None = Field(None, description="the seed's name for path")
    name: Annotated[str, Field(pattern=NAME.pattern)] | None = Field(
        None, description="1-64 of a-z 0-9 . _ -, starting with a letter or digit; default: from the file"
    )
    version: Annotated[str, Field(pattern=SEMVER.pattern)] | None = Field(
        None, description="MAJOR.MINOR.PATCH; default: the newest with its minor bumped"
    )
    task: Literal["text-generation", "text-embedding"] = "text-generation"
    device: str = Field("cpu", pattern=DEVICE.pattern, description="cpu, cuda, cuda:1, mps...")
    config: dict[str, Any] = Field(default_factory=dict)


class AliasRequest(_Command):
    alias: str = Field(
        pattern=ALIAS.pattern,
        json_schema_extra=NOT_LATEST,
        description="1-32 of a-z 0-9 _ -, starting with a letter; not `latest`",
    )
    version: VersionRef = Field(description="a version, or an alias naming one")


class DeployRequest(_Command):
    version: VersionRef | None = Field(None, description="a version or alias; default: the newest")
