"""A texttune classifier (encoder + pooling + head) as plain PyTorch and transformers code.

Written by ``texttune export`` into a model folder that no stock transformers class fits: load it with
``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`` or
``pipeline("text-classification", model=folder, trust_remote_code=True)``. It imports only torch and
transformers. Module names are texttune's own, so ``model.safetensors`` is the trained model's state
dict; each encoder here computes what texttune's encoder of the same name computes (the export checks
the logits before writing the folder).
"""

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_texttune import TexttuneStandaloneConfig

# --------------------------------------------------------------------------- pooling and head


def pool(hidden, mask, how):
    """(B, T, H) hidden states + (B, T) mask of real tokens -> (B, H); padding never counts."""
    if how == "cls":
        return hidden[:, 0]
    mask = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    if how == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if how == "max":
        pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values  # (B, H)
        return pooled.masked_fill(mask.sum(dim=1) == 0, 0.0)  # a text with no real token pools to zeros
    raise ValueError(f"unknown pooling '{how}'")


ACTIVATIONS = {"tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU}


def build_head(head, in_features, num_labels):
    """Linear, or Linear -> activation -> Linear; the Sequential's indices are texttune's (head.1, head.4)."""
    dropout = head.get("dropout", 0.1)
    if head.get("type", "linear") == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_labels))
    hidden = head.get("hidden_size") or in_features
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, hidden), ACTIVATIONS[head["activation"]](),
                         nn.Dropout(dropout), nn.Linear(hidden, num_labels))


# --------------------------------------------------------------------------- encoders


class HFEncoder(nn.Module):
    """Any transformers encoder (BERT, RoBERTa, ...) built from its config; its last hidden states."""

    def __init__(self, encoder_config):
        super().__init__()
        config = AutoConfig.for_model(**encoder_config)
        # As texttune builds it: BERT without its pooler (texttune pools itself), others as they come.
        extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        self.model = AutoModel.from_config(config, **extra)
        self.hidden_size = config.hidden_size

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state


class CNNEncoder(nn.Module):
    """Kim (2014): wide convolutions of each width, max over the windows that cover a real token, ReLU."""

    pools_itself = True

    def __init__(self, cfg):
        super().__init__()
        dim, filters = int(cfg["embedding_dim"]), int(cfg["num_filters"])
        self.embedding = nn.Embedding(cfg["vocab_size"], dim, padding_idx=int(cfg["pad_id"]))
        self.dropout = nn.Dropout(cfg["dropout"])
        self.kernel_sizes = [int(k) for k in cfg["kernel_sizes"]]
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, k, padding=k - 1) for k in self.kernel_sizes)
        self.hidden_size = filters * len(self.convs)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        real = attention_mask.unsqueeze(1).float()  # (B, 1, T)
        x = self.dropout(self.embedding(input_ids).transpose(1, 2) * real)  # (B, E, T), padding zeroed
        pooled = []
        for conv, k in zip(self.convs, self.kernel_sizes):
            out = conv(x)  # (B, F, T+k-1)
            covers_real = F.max_pool1d(F.pad(real, (k - 1, k - 1)), k, stride=1) > 0  # (B, 1, T+k-1)
            out = out.masked_fill(~covers_real, torch.finfo(out.dtype).min)
            pooled.append(F.relu(out.max(dim=2).values))  # (B, F)
        return torch.cat(pooled, dim=1)  # (B, K*F)


def right_align(input_ids, real):
    """Each row's real tokens first, in order (packing assumes right padding)."""
    if not (real[:, 1:] & ~real[:, :-1]).any():
        return input_ids, real
    order = torch.sort((~real).to(torch.int8), dim=1, stable=True).indices  # (B, T)
    return input_ids.gather(1, order), real.gather(1, order)


CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNEncoder(nn.Module):
    """RNN, LSTM or GRU over packed sequences; the final state, or mean/max over real tokens."""

    pools_itself = True

    def __init__(self, cfg):
        super().__init__()
        self.pooling = cfg["pooling"]
        self.num_directions = 2 if cfg["bidirectional"] else 1
        self.embedding = nn.Embedding(cfg["vocab_size"], cfg["embedding_dim"], padding_idx=int(cfg["pad_id"]))
        self.dropout = nn.Dropout(cfg["dropout"])
        self.rnn = CELLS[cfg["cell"]](
            cfg["embedding_dim"], cfg["hidden_size"], num_layers=cfg["num_layers"], batch_first=True,
            bidirectional=bool(cfg["bidirectional"]), dropout=cfg["dropout"] if cfg["num_layers"] > 1 else 0.0)
        self.hidden_size = int(cfg["hidden_size"]) * self.num_directions

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        input_ids, real = right_align(input_ids, attention_mask.bool())  # (B, T), (B, T)
        x = self.dropout(self.embedding(input_ids)) * real.unsqueeze(-1)  # (B, T, E)
        lengths = real.sum(dim=1).clamp(min=1).cpu()  # an all-padding row still needs one step to pack
        outputs, state = self.rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        if self.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # (L*D, B, H)
            return torch.cat(list(h_n[-self.num_directions:]), dim=-1)  # (B, D*H)
        steps = input_ids.shape[1]
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=steps)  # (B, T, D*H)
        packed_steps = torch.arange(steps, device=real.device) < lengths.to(real.device)[:, None]  # (B, T)
        return pool(outputs, packed_steps, self.pooling)  # (B, D*H)


class EncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` without the fused inference path (it would bypass hooks)."""

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):  # (B, T, H)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))


class TransformerEncoder(nn.Module):
    """Token embedding (x embedding_scale, default sqrt(d_model)) + positions -> nn.TransformerEncoder -> (B, T, d_model), zeros at padding."""

    def __init__(self, cfg):
        super().__init__()
        d_model, embedding_dim = int(cfg["d_model"]), int(cfg["embedding_dim"] or cfg["d_model"])
        self.max_length, self.scale = int(cfg["max_length"]), float(cfg.get("embedding_scale") or math.sqrt(d_model))
        self.embedding = nn.Embedding(cfg["vocab_size"], embedding_dim, padding_idx=int(cfg["pad_id"]))
        self.project = nn.Linear(embedding_dim, d_model) if embedding_dim != d_model else nn.Identity()
        if cfg["positions"] == "learned":
            self.position = nn.Embedding(self.max_length, d_model)
        else:  # the sinusoidal table is saved with the weights
            self.register_buffer("position_table", torch.zeros(self.max_length, d_model))
        self.dropout = nn.Dropout(cfg["dropout"])
        layer = EncoderLayer(d_model, cfg["nhead"], cfg["dim_feedforward"], cfg["dropout"], batch_first=True,
                             norm_first=bool(cfg["norm_first"]))
        self.encoder = nn.TransformerEncoder(layer, cfg["num_layers"], enable_nested_tensor=False,
                                             norm=nn.LayerNorm(d_model) if cfg["norm_first"] else None)
        self.hidden_size = d_model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if input_ids.shape[1] > self.max_length:
            raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_length {self.max_length}; "
                             "truncate the input (truncation=True)")
        real = attention_mask.bool()  # (B, T)
        index = (real.long().cumsum(dim=1) - 1).clamp(min=0)  # positions count real tokens only
        positions = self.position(index) if hasattr(self, "position") else self.position_table[index]
        x = self.project(self.embedding(input_ids)) * self.scale + positions  # (B, T, H)
        padding = ~real
        padding[:, 0] &= real.any(dim=1)  # a row of padding alone attends to its first position, not NaN
        hidden = self.encoder(self.dropout(x), src_key_padding_mask=padding)  # (B, T, H)
        return hidden * real.unsqueeze(-1)


BIGRAM_PRIME = 1_000_003


class BagOfNgramsEncoder(nn.Module):
    """fastText: the mean of word and hashed word-bigram embeddings of the real tokens."""

    pools_itself = True

    def __init__(self, cfg):
        super().__init__()
        self.vocab_size, self.ngrams, self.num_buckets = int(cfg["vocab_size"]), int(cfg["ngrams"]), int(cfg["num_buckets"])
        rows = self.vocab_size + (self.num_buckets if self.ngrams == 2 else 0)
        self.embedding = nn.EmbeddingBag(rows, cfg["embedding_dim"], mode="mean")
        self.dropout = nn.Dropout(cfg["dropout"])
        self.hidden_size = int(cfg["embedding_dim"])

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        real = attention_mask.bool()  # (B, T)
        ids, keep = input_ids, real
        if self.ngrams == 2:
            pairs = input_ids[:, :-1] * BIGRAM_PRIME + input_ids[:, 1:]  # (B, T-1)
            ids = torch.cat([input_ids, self.vocab_size + pairs % self.num_buckets], dim=1)  # (B, 2T-1)
            keep = torch.cat([real, real[:, :-1] & real[:, 1:]], dim=1)
        counts = keep.sum(dim=1)  # (B,)
        return self.dropout(self.embedding(ids[keep], torch.cumsum(counts, dim=0) - counts))  # (B, D)


ENCODERS = {"hf": HFEncoder, "cnn": CNNEncoder, "rnn": RNNEncoder, "transformer": TransformerEncoder,
            "bag_of_ngrams": BagOfNgramsEncoder}

# --------------------------------------------------------------------------- strategy modules (hooks)
# Adapters and prefixes hang under the module they act on and run from forward hooks, as in texttune;
# config.hooks lists those modules by name.


class Adapter(nn.Module):
    """x + up(act(down(x)))."""

    def __init__(self, hidden_size, bottleneck, activation):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.activation = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden_size)

    def forward(self, x):  # (B, T, H)
        return x + self.up(self.activation(self.down(x)))


def _run_adapter(module, args, output):
    if isinstance(output, tuple):  # nn.MultiheadAttention: (attention output, weights)
        return (module.adapter(output[0]), *output[1:])
    return module.adapter(output)


class Prompt(nn.Module):
    def __init__(self, length, hidden_size):
        super().__init__()
        self.vectors = nn.Parameter(torch.zeros(length, hidden_size))  # (P, H)


class LayerPrefix(nn.Module):
    def __init__(self, length, hidden_size):
        super().__init__()
        self.keys = nn.Parameter(torch.zeros(length, hidden_size))  # (P, H)
        self.values = nn.Parameter(torch.zeros(length, hidden_size))  # (P, H)


def _extend_key_mask(mask, p, pad_is_true=False):
    """Prepend ``p`` attendable key positions to a (B, T) or (B, 1, Tq, T) mask."""
    if mask is None:
        return None
    value = (not pad_is_true) if mask.dtype == torch.bool else 0.0
    if mask.dim() == 2 and not pad_is_true and mask.dtype != torch.bool:
        value = 1  # 2-D transformers masks: 1 = real token
    return nn.functional.pad(mask, (p, 0), value=value)


def _extend_square_mask(mask, p):
    """(B, 1, Tq, Tk) -> (B, 1, p+Tq, p+Tk): prefix keys attendable; prefix queries see what the first row sees."""
    if mask is None:
        return None
    mask = nn.functional.pad(mask, (p, 0), value=True if mask.dtype == torch.bool else 0.0)
    if mask.shape[-2] > 1:
        mask = torch.cat([mask[..., :1, :].expand(*mask.shape[:-2], p, mask.shape[-1]), mask], dim=-2)
    return mask


def _prepend_prompt(stack, args, kwargs):
    hidden = args[0] if args else kwargs.pop("hidden_states")  # (B, T, H)
    p = stack.prompt.vectors.shape[0]
    prompt = stack.prompt.vectors.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)  # (B, P, H)
    hidden = torch.cat([prompt, hidden], dim=1)  # (B, P+T, H)
    if "src_key_padding_mask" in kwargs:  # nn.TransformerEncoder: (B, T), True = padding
        kwargs["src_key_padding_mask"] = _extend_key_mask(kwargs["src_key_padding_mask"], p, pad_is_true=True)
    if kwargs.get("attention_mask") is not None:  # a transformers encoder stack: (B, 1, T, T)
        kwargs["attention_mask"] = _extend_square_mask(kwargs["attention_mask"], p)
    return (hidden, *args[1:]), kwargs


def _strip_prompt(stack, args, kwargs, output):
    p = stack.prompt.vectors.shape[0]
    if isinstance(output, torch.Tensor):
        return output[:, p:]
    if hasattr(output, "last_hidden_state"):
        output.last_hidden_state = output.last_hidden_state[:, p:]
        return output
    return (output[0][:, p:], *output[1:])


class _PrefixKeyValues:
    """Stands in for a key/value cache: transformers attention calls ``update`` with the layer's keys and
    values (B, heads, T, d) and attends over what it returns, the prefix first. Nothing is stored."""

    def __init__(self, prefix, heads):
        self.prefix, self.heads = prefix, heads

    def update(self, key, value, layer_idx=None, *args, **kwargs):
        def heads_first(x):  # (P, H) -> (B, heads, P, d)
            x = x.to(key.dtype).view(1, x.shape[0], self.heads, -1).transpose(1, 2)
            return x.expand(key.shape[0], -1, -1, -1)

        return (torch.cat([heads_first(self.prefix.keys), key], dim=2),
                torch.cat([heads_first(self.prefix.values), value], dim=2))


# transformers 5.0-5.23 name the attention's cache keyword past_key_values, 5.24 and later cache.
CACHE_KEYWORDS = ("cache", "past_key_values")


def _hf_deep_prefix(module, args, kwargs):
    heads = module.num_attention_heads if hasattr(module, "num_attention_heads") else module.config.num_attention_heads
    kwargs[module.prefix_cache_keyword] = _PrefixKeyValues(module.prefix, heads)
    if kwargs.get("attention_mask") is not None:  # (B, 1, Tq, Tk): the prefix keys are always visible
        kwargs["attention_mask"] = _extend_key_mask(kwargs["attention_mask"], module.prefix.keys.shape[0])
    return args, kwargs


def _mha_deep_prefix(module, args, kwargs):
    # nn.MultiheadAttention(query, key, value, ...): the prefixes are key/value inputs of the layer.
    query, key, value = args[:3]
    keys = module.prefix.keys.to(key.dtype).unsqueeze(0).expand(query.shape[0], -1, -1)  # (B, P, H)
    values = module.prefix.values.to(value.dtype).unsqueeze(0).expand(query.shape[0], -1, -1)
    kwargs["key_padding_mask"] = _extend_key_mask(kwargs.get("key_padding_mask"), keys.shape[1], pad_is_true=True)
    return (query, torch.cat([keys, key], dim=1), torch.cat([values, value], dim=1), *args[3:]), kwargs


def attach_hooks(model, hooks, hidden_size):
    """Re-create the adapters and prefixes ``hooks`` names (module paths relative to ``model``)."""
    adapters = hooks.get("adapters")
    for name in (adapters or {}).get("modules", []):
        module = model.get_submodule(name)
        module.add_module("adapter", Adapter(hidden_size, adapters["bottleneck"], adapters["activation"]))
        module.register_forward_hook(_run_adapter)
    if hooks.get("prompt"):
        stack = model.get_submodule(hooks["prompt"]["module"])
        stack.add_module("prompt", Prompt(hooks["prompt"]["length"], hidden_size))
        stack.register_forward_pre_hook(_prepend_prompt, with_kwargs=True)
        stack.register_forward_hook(_strip_prompt, with_kwargs=True)
    deep = hooks.get("deep_prefix")
    for name in (deep or {}).get("modules", []):
        attention = model.get_submodule(name)
        attention.add_module("prefix", LayerPrefix(deep["length"], hidden_size))
        if isinstance(attention, nn.MultiheadAttention):
            attention.register_forward_pre_hook(_mha_deep_prefix, with_kwargs=True)
            continue
        parameters = inspect.signature(attention.forward).parameters
        attention.prefix_cache_keyword = next(k for k in CACHE_KEYWORDS if k in parameters)
        attention.register_forward_pre_hook(_hf_deep_prefix, with_kwargs=True)


# --------------------------------------------------------------------------- the classifier


class TexttuneStandaloneForSequenceClassification(PreTrainedModel):
    config_class = TexttuneStandaloneConfig
    base_model_prefix = "texttune"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config):
        super().__init__(config)
        self.encoder = ENCODERS[config.encoder_type](config.encoder)
        self.head = build_head(config.head, self.encoder.hidden_size, config.num_labels)
        attach_hooks(self, config.hooks, self.encoder.hidden_size)
        self.post_init()

    def _init_weights(self, module):
        # Every weight comes from model.safetensors; the head is initialised only when trained anew.
        if isinstance(module, nn.Linear) and any(module is m for m in self.head.modules()):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **_):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)  # (B, T, H) or (B, H)
        pooled = hidden if getattr(self.encoder, "pools_itself", False) else pool(hidden, attention_mask,
                                                                                  self.config.pooling)
        logits = self.head(pooled)  # (B, C)
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
