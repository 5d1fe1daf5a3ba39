"""The modelling code ``texttune export`` writes into a folder that no stock transformers class fits.

``configuration_texttune.py`` and ``modeling_texttune.py`` are copied verbatim into such an export and
named by its ``config.json`` (``auto_map``), so ``trust_remote_code=True`` loads it where texttune is not
installed. They import only torch and transformers (the relative import is transformers' convention for
remote code) and mirror texttune's module names, so the exported weights are the run's own state dict.
Only ``texttune.export`` imports them here: to build the model it saves and to check, before anything is
written, that it computes what the run's model computes.
"""
