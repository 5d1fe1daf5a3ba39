"""Config of a texttune classifier exported with its own code (written by ``texttune export``).

Imports only transformers: this file is loaded with ``trust_remote_code=True`` where texttune is absent.
"""

from transformers import PretrainedConfig


class TexttuneStandaloneConfig(PretrainedConfig):
    """An encoder (``encoder_type`` + its resolved hyper-parameters), a pooling rule, a head, and the
    modules a parameter-efficient strategy added (``hooks``: where adapters and prefixes sit)."""

    model_type = "texttune_standalone"

    def __init__(self, encoder_type="hf", encoder=None, pooling="cls", head=None, hooks=None, **kwargs):
        self.encoder_type = encoder_type
        self.encoder = dict(encoder or {})
        self.pooling = pooling
        self.head = dict(head or {})
        self.hooks = dict(hooks or {})
        super().__init__(**kwargs)
