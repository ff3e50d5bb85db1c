"""Request bodies of the OpenAI-compatible, registry and seed routes, with OpenAI's bounds.

Unknown OpenAI fields (user, logit_bias, ...) are accepted and dropped, since SDKs send them; fields
forgeflow cannot honour (n > 1, tools) are refused instead of silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "developer", "user", "assistant"]
MAX_MESSAGES = 1024


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Body):
    role: Role
    content: str | list[dict[str, Any]] = Field(description="text, or a list of text parts")

    @field_validator("content")
    @classmethod
    def _text_only(cls, v: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(v, list):
            for part in v:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported")
        return v

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part["text"]) for part in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str | None = Field(None, max_length=200, description="name, name:version or name:alias")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=131_072)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def upstream(self) -> dict[str, Any]:
        """The sampling fields to forward (unset ones left to the backend's defaults)."""
        body = self.model_dump(
            exclude_none=True, exclude={"model", "n", "stream", "stream_options", "messages", "prompt"}
        )
        if self.stream:
            body["stream"] = True
            if self.stream_options is not None:
                body["stream_options"] = self.stream_options.model_dump()
        return body


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=131_072)

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
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("one prompt per request")
        return v

    def upstream(self) -> dict[str, Any]:
        body = super().upstream()
        body.pop("echo", None)
        body["prompt"] = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return body


class EmbeddingRequest(_Body):
    model: str | None = Field(None, max_length=200)
    input: str | list[str] = Field(description="a string or a list of up to 2048 strings")
    encoding_format: Literal["float", "base64"] = "float"  # base64: float32 little-endian

    @field_validator("input")
    @classmethod
    def _inputs(cls, v: str | list[str]) -> str | list[str]:
        items = [v] if isinstance(v, str) else v
        if not items or len(items) > 2048:
            raise ValueError("give 1 to 2048 strings")
        if any(not s for s in items):
            raise ValueError("inputs must not be empty strings")
        return v

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class QueryRequest(_Body):
    prompt: str = Field(min_length=1)
    model: str | None = Field(None, max_length=200)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=131_072)


class InferRequest(_Body):
    text: str | list[str]
    options: dict[str, Any] = Field(default_factory=dict)


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="a .gguf file, an export directory or an HF model directory")
    source: str | None = Field(None, description="the seed's name for path")
    name: str | None = None
    version: str | None = None
    task: Literal["text-generation", "text-embedding"] = "text-generation"
    device: str = "cpu"
    config: dict[str, Any] = Field(default_factory=dict)


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str
    version: str


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, description="a version or alias; default: the newest")
