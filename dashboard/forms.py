"""Forms for people: one per work type generated from its payload JSON Schema, raw
JSON, batch upload, and payload edits on the dead-letter page."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from project.exceptions import ValidationError
from scheduling import registry

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_BATCH_LINES = 10_000


def _field_for(name: str, prop: dict[str, Any], required: bool) -> forms.Field:
    """A typed form field for one schema property; anything without a plain type
    (objects, arrays, unions) is entered as JSON."""
    common = {
        "required": required and "default" not in prop,
        "help_text": prop.get("description", ""),
        "initial": prop.get("default"),
        "label": prop.get("title", name.replace("_", " ").capitalize()),
    }
    kind = prop.get("type")
    if "enum" in prop:
        return forms.TypedChoiceField(
            choices=[(value, str(value)) for value in prop["enum"]],
            coerce=lambda raw: next(v for v in prop["enum"] if str(v) == raw),
            **common,
        )
    if kind == "integer":
        return forms.IntegerField(min_value=prop.get("minimum"), max_value=prop.get("maximum"), **common)
    if kind == "number":
        return forms.FloatField(min_value=prop.get("minimum"), max_value=prop.get("maximum"), **common)
    if kind == "boolean":
        return forms.BooleanField(**{**common, "required": False})
    if kind == "string":
        return forms.CharField(
            max_length=prop.get("maxLength"), min_length=prop.get("minLength"), strip=False, **common
        )
    return forms.JSONField(**{**common, "initial": json.dumps(prop.get("default")) if "default" in prop else None})


class PriorityMixin(forms.Form):
    priority = forms.IntegerField(
        min_value=0, max_value=9, required=False, help_text="0-9, higher runs first. Empty: the work type's."
    )


class WorkTypeForm(PriorityMixin):
    """Fields from the work type's payload schema; the schema itself has the last
    word (its errors are shown next to the field they concern)."""

    def __init__(self, *args: Any, work_type: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = registry.work_type_spec(work_type)
        schema = self.spec.payload_schema
        required = set(schema.get("required", []))
        self.payload_fields = list(schema.get("properties", {}))
        for name, prop in schema.get("properties", {}).items():
            self.fields[f"p_{name}"] = _field_for(name, prop, name in required)
        self.order_fields([*(f"p_{name}" for name in self.payload_fields), "priority"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        payload = {}
        for name in self.payload_fields:
            value = cleaned.get(f"p_{name}")
            if value is not None and value != "":
                payload[name] = value
        if self.errors:
            return cleaned
        try:
            cleaned["payload"] = registry.payload_validate(self.spec, payload)
        except ValidationError as error:
            self._schema_error(str(error))
        return cleaned

    def _schema_error(self, message: str) -> None:
        # "demo.sleep: payload.seconds: ..." names the field when there is one.
        where = message.split(": ", 2)
        field = where[1].removeprefix("payload.").split("[")[0] if len(where) == 3 else ""
        if f"p_{field}" in self.fields:
            self.add_error(f"p_{field}", where[2])
        else:
            self.add_error(None, message)


def _public_work_types() -> list[tuple[str, str]]:
    return [(name, name) for name, spec in sorted(registry.work_type_specs().items()) if not spec.internal]


class RawJsonForm(PriorityMixin):
    work_type = forms.ChoiceField(choices=_public_work_types)
    payload = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "mono"}),
        initial="{}",
        help_text="A JSON object that the work type's schema accepts.",
    )

    def clean_payload(self) -> Any:
        try:
            return json.loads(self.cleaned_data["payload"])
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"not valid JSON: {error}") from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "work_type" in cleaned and "payload" in cleaned:
            try:
                cleaned["payload"] = registry.payload_validate(
                    registry.work_type_spec(cleaned["work_type"]), cleaned["payload"]
                )
            except ValidationError as error:
                self.add_error("payload", str(error))
        return cleaned


class BatchUploadForm(PriorityMixin):
    work_type = forms.ChoiceField(choices=_public_work_types)
    file = forms.FileField(help_text=f"JSON Lines: one payload object per line, at most {MAX_BATCH_LINES} lines.")

    def clean_file(self) -> list[Any]:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"the file is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        payloads = []
        for number, line in enumerate(upload.read().decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                payloads.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise forms.ValidationError(f"line {number} is not valid JSON: {error}") from None
        if not payloads:
            raise forms.ValidationError("the file holds no payloads")
        if len(payloads) > MAX_BATCH_LINES:
            raise forms.ValidationError(f"at most {MAX_BATCH_LINES} payloads per file, not {len(payloads)}")
        return payloads


class PayloadEditForm(forms.Form):
    payload = forms.CharField(widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "mono"}))

    def clean_payload(self) -> Any:
        try:
            value = json.loads(self.cleaned_data["payload"])
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("the payload must be a JSON object")
        return value


class RequestUploadForm(forms.Form):
    file = forms.FileField(
        help_text='A JSON file: {"name": ..., "items": [{"key", "work_type", "payload", "priority", '
        '"depends_on": [keys]}]}.'
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"the file is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        try:
            return json.loads(upload.read().decode("utf-8", errors="replace"))
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"not valid JSON: {error}") from None
