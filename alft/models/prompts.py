"""The prompt and token layout of instruction -> response models.

Token layout of one training example (``max_length`` = L)::

    [ prompt tokens ........................ ][ response tokens ......... ][EOS]
      labels -100 (no loss)                     labels = the tokens (loss on these only)

* The prompt is ``format_prompt``'s string, tokenized on its own; the response is tokenized
  on its own (no special tokens) and EOS is appended. Tokenizing the two apart is what
  makes the split exact, and it is what the model sees at generation time: the prompt's
  tokens, then its own continuation.
* Truncation: the prompt gets at most ``L - L // 4`` tokens (its first ones, plus its last
  ``PROMPT_TAIL`` tokens, which hold the "### Response:" or assistant marker the model must
  answer after); the response keeps as many of its first tokens as fit in the rest (always
  at least ``L // 4``), EOS only when it fits. Prompts are cut the same way for training,
  generation, scoring and embedding, so a long prompt means the same tokens everywhere.
* Padding: decoding batches are padded on the left (every row's next token is at the last
  column), teacher-forced and embedding batches on the right; position ids always come
  from the attention mask, so padding never shifts a row's positions.
* A tokenizer without a pad token (GPT-2, Llama) pads with EOS; padded positions are
  masked and never labeled, so the EOS the model must learn is unaffected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alft.data import Example

IGNORE = -100  # label of tokens outside the loss (torch's CrossEntropyLoss ignore_index)
PROMPT_TAIL = 16  # last prompt tokens kept by truncation: they hold the response marker


def format_prompt(tokenizer: Any, ex: Example, chat_template: bool) -> str:
    """The prompt string of ``ex``, ending where the response starts.

    With ``chat_template`` allowed and a tokenizer that has one: a single user message
    (instruction, a blank line, the input when non-empty) rendered with
    ``add_generation_prompt=True``. Otherwise the Alpaca layout::

        ### Instruction:
        <instruction>

        ### Input:            (only when the input is non-empty)
        <input>

        ### Response:
    """
    instruction, inp = ex.instruction.strip(), ex.input.strip()
    if chat_template and getattr(tokenizer, "chat_template", None):
        content = f"{instruction}\n\n{inp}" if inp else instruction
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    parts = [f"### Instruction:\n{instruction}\n\n"]
    if inp:
        parts.append(f"### Input:\n{inp}\n\n")
    parts.append("### Response:\n")
    return "".join(parts)


def uses_chat_template(tokenizer: Any, setting: str) -> bool:
    return setting == "auto" and bool(getattr(tokenizer, "chat_template", None))
