"""Data: read the formats users already have, validate them up front, tokenize and batch them for training.

    records = read_records("prefs.jsonl")                       # JSONL / JSON / Parquet / CSV / datasets folder
    examples = validate(records, "preference", tokenizer, max_length=512)   # DataError names file, line, field
    batch = pad_preference_batch([tokenize_preference(e, tokenizer, 512) for e in examples], tokenizer.pad_token_id)
"""

from tandem.data.collate import (
    IGNORE_INDEX,
    pad_preference_batch,
    pad_prompt_response_batch,
    pad_sft_batch,
    pad_unpaired_batch,
)
from tandem.data.errors import DataError
from tandem.data.formats import FORMATS, SFT_FORMATS, detect_format, load_examples, validate
from tandem.data.io import Record, read_records, records_from_dicts
from tandem.data.pieces import ALLOWED_ROLES, shared_leading_messages, shared_text_prefix
from tandem.data.tokenize import pack_sequences, tokenize_preference, tokenize_sft, tokenize_text, tokenize_unpaired

__all__ = [
    "ALLOWED_ROLES",
    "FORMATS",
    "IGNORE_INDEX",
    "SFT_FORMATS",
    "DataError",
    "Record",
    "detect_format",
    "load_examples",
    "pack_sequences",
    "pad_preference_batch",
    "pad_prompt_response_batch",
    "pad_sft_batch",
    "pad_unpaired_batch",
    "read_records",
    "records_from_dicts",
    "shared_leading_messages",
    "shared_text_prefix",
    "tokenize_preference",
    "tokenize_sft",
    "tokenize_text",
    "tokenize_unpaired",
    "validate",
]
