"""The zoo's architectures: GPT-2-shaped decoder, an MLP stack and BERT-base shapes.

Defined inside :func:`zoo_classes` so that importing :mod:`bigviz.models` does not import
torch; :func:`bigviz.models.build_model` builds them on the meta device from a config.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NO_SPLIT", "zoo_classes"]


def zoo_classes() -> dict[str, Any]:
    """The zoo's nn.Module classes by kind, defined on first use (keeps torch out of import).

    Example:
        >>> sorted(zoo_classes())
        ['Block', 'bert', 'gpt', 'mlp']
    """
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    import torch
    from torch import nn

    def embedding(n: int, d: int) -> nn.Embedding:
        # Passing the weight skips reset_parameters: normal_ on the meta device goes
        # through torch._refs and imports torch._dynamo (~3 s) on first use.
        return nn.Embedding(n, d, _weight=torch.empty(n, d))

    class Conv1D(nn.Module):
        """GPT-2's transposed linear: weight is (in, out)."""

        def __init__(self, n_in: int, n_out: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(n_in, n_out))
            self.bias = nn.Parameter(torch.empty(n_out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(
                *x.shape[:-1], -1
            )

    class Attention(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.c_attn = Conv1D(d, 3 * d)
            self.c_proj = Conv1D(d, d)
            self.heads = heads

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            q, k, v = self.c_attn(x).split(d, dim=-1)
            q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            out: torch.Tensor = self.c_proj(y.transpose(1, 2).reshape(b, t, d))
            return out

    class MLP(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.c_fc = Conv1D(d, 4 * d)
            self.c_proj = Conv1D(4 * d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.c_proj(nn.functional.gelu(self.c_fc(x)))
            return out

    class Block(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(d)
            self.attn = Attention(d, heads)
            self.ln_2 = nn.LayerNorm(d)
            self.mlp = MLP(d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.ln_1(x))
            out: torch.Tensor = x + self.mlp(self.ln_2(x))
            return out

    class Transformer(nn.Module):
        def __init__(self, c: dict[str, int]) -> None:
            super().__init__()
            d = c["width"]
            self.wte = embedding(c["vocab"], d)
            self.wpe = embedding(c["positions"], d)
            self.h = nn.ModuleList(Block(d, c["heads"]) for _ in range(c["layers"]))
            self.ln_f = nn.LayerNorm(d)

    class GPT(nn.Module):
        """GPT-2-shaped decoder with GPT-2's parameter names; the head is tied."""

        def __init__(self, c: dict[str, int]) -> None:
            super().__init__()
            self.config = dict(c)
            self.transformer = Transformer(c)
            self.lm_head = nn.Linear(c["width"], c["vocab"], bias=False)
            self.tie_weights()

        def tie_weights(self) -> None:
            """Share the head with the embedding (whichever of the two holds real data)."""
            wte = self.transformer.wte
            if wte.weight.is_meta and not self.lm_head.weight.is_meta:
                wte.weight = self.lm_head.weight
            else:
                self.lm_head.weight = wte.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(ids.shape[-1], device=ids.device)
            x = self.transformer.wte(ids) + self.transformer.wpe(pos)
            for block in self.transformer.h:
                x = block(x)
            out: torch.Tensor = self.lm_head(self.transformer.ln_f(x))
            return out

    class MLPStack(nn.Module):
        def __init__(self, c: dict[str, int]) -> None:
            super().__init__()
            self.layers = nn.ModuleList(
                nn.Linear(c["width"], c["width"]) for _ in range(c["layers"])
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = torch.relu(layer(x))
            return x

    class BertSelf(nn.Module):
        def __init__(self, h: int) -> None:
            super().__init__()
            self.query = nn.Linear(h, h)
            self.key = nn.Linear(h, h)
            self.value = nn.Linear(h, h)

    class BertDense(nn.Module):
        def __init__(self, n_in: int, n_out: int, norm: bool) -> None:
            super().__init__()
            self.dense = nn.Linear(n_in, n_out)
            if norm:
                self.LayerNorm = nn.LayerNorm(n_out)

    class BertAttention(nn.Module):
        def __init__(self, h: int) -> None:
            super().__init__()
            self.self = BertSelf(h)
            self.output = BertDense(h, h, norm=True)

    class BertLayer(nn.Module):
        def __init__(self, h: int, i: int) -> None:
            super().__init__()
            self.attention = BertAttention(h)
            self.intermediate = BertDense(h, i, norm=False)
            self.output = BertDense(i, h, norm=True)

    class BertEmbeddings(nn.Module):
        def __init__(self, c: dict[str, int]) -> None:
            super().__init__()
            h = c["hidden"]
            self.word_embeddings = embedding(c["vocab"], h)
            self.position_embeddings = embedding(c["positions"], h)
            self.token_type_embeddings = embedding(2, h)
            self.LayerNorm = nn.LayerNorm(h)

    class BertEncoder(nn.Module):
        def __init__(self, c: dict[str, int]) -> None:
            super().__init__()
            self.layer = nn.ModuleList(
                BertLayer(c["hidden"], c["intermediate"]) for _ in range(c["layers"])
            )

    class Bert(nn.Module):
        """BERT-base shapes with Transformers' BertModel parameter names (no pooler)."""

        def __init__(self, c: dict[str, int]) -> None:
            super().__init__()
            self.embeddings = BertEmbeddings(c)
            self.encoder = BertEncoder(c)

    _CLASSES = {"gpt": GPT, "mlp": MLPStack, "bert": Bert, "Block": Block}
    return _CLASSES


_CLASSES: dict[str, Any] | None = None

#: Module classes that a device map must not split (accelerate's no_split_module_classes).
NO_SPLIT = ["Block", "BertLayer"]
