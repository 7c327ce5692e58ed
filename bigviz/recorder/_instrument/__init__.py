"""Automatic phases: known loader calls mark themselves while a recorder runs.

Instrumented while recording, each where the installed version has it (looked up by
name; a missing name is skipped):

* torch: ``load``, ``save``, ``nn.Module.load_state_dict``, ``nn.Module.to``,
  ``torch.distributed.checkpoint`` ``load``/``save`` (:mod:`._torch`);
* safetensors: ``load_file``, ``save_file``, ``load``, ``save``, ``safe_open`` with the
  bytes taken through ``get_tensor``/``get_slice`` while it is open (:mod:`._safetensors`);
* Transformers: ``from_pretrained``/``save_pretrained`` with a child per shard and the
  steps between (:mod:`._transformers`, which says what traces of 4.46 and 5.24 found);
* Accelerate ``load_checkpoint_and_dispatch``, ``load_checkpoint_in_model`` (per shard),
  ``dispatch_model``, ``infer_auto_device_map``; huggingface_hub ``load_torch_model``,
  ``save_torch_state_dict``, ``save_torch_model`` (:mod:`._libs`).

Phases are named after what happened (class, folder or file, shard ``i/n``, bytes with
shared storage counted once, device). A loader call inside a *leaf* phase (``load_file``'s
own ``safe_open``) makes no second phase; a *container* (``from_pretrained``) shows the
calls inside it as children. A phase that mapped file bytes which are not resident yet
says so ("475.0 MiB mapped, arrives on first use"; ``detail["lazy_bytes"]``), and the end
of a later recording marks what arrived meanwhile ("arrived on first use: …").

How the patching survives ``from x import f`` bindings and is undone: :mod:`._patches`.
The phases go to a :class:`PhaseSink` (anything with ``recording_active``,
``open_phase`` and ``close_phase``, as :class:`bigviz.recorder.Recorder` has); this
package never imports the recorder.
"""

from __future__ import annotations

from bigviz.recorder._instrument._core import PhaseSink
from bigviz.recorder._instrument._patches import Patches, install

__all__ = ["Patches", "PhaseSink", "install"]
