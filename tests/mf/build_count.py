"""Build one MindFormers network on CPU at small sizes, apply LoRA, print its parameter counts.

Run as ``python build_count.py '{"family": ..., "model_config": {...}, "pet_config": {...}}'`` in
a scratch directory (MindFormers writes ./output). One family per process: the 1.6+ models need
``use_legacy: False`` in MindFormers' global context, the legacy ones the default. Prints one JSON
line ``{"trainable": N, "total": N, "lora_names": [...]}`` as the last line of stdout.
"""

import json
import sys

# Parameters that are buffers, not weights: ChatGLM2's paged-attention KV cache (built even for
# training), the MoE router's load counter.
BUFFERS = ("key_cache", "value_cache", "fi_accu")


def build(family: str, mc: dict):
    if family == "mcore":
        from mindformers.core.context.build_context import build_context
        build_context({"use_legacy": False, "context": {"mode": 1, "device_target": "CPU"},
                       "parallel": {}, "parallel_config": {}})
        if mc.get("num_experts"):
            from mindformers.models.qwen3_moe.configuration_qwen3_moe import Qwen3MoeConfig
            from mindformers.models.qwen3_moe.modeling_qwen3_moe_train import TrainingQwen3MoeForCausalLM
            return TrainingQwen3MoeForCausalLM(Qwen3MoeConfig(**mc))
        from mindformers.models.qwen3.configuration_qwen3 import Qwen3Config
        from mindformers.models.qwen3.modeling_qwen3_train import TrainingQwen3ForCausalLM
        return TrainingQwen3ForCausalLM(Qwen3Config(**mc))
    import mindspore as ms
    ms.set_context(mode=1, device_target="CPU")
    if family == "glm2":
        from mindformers.models.glm2 import ChatGLM2Config, ChatGLM2ForConditionalGeneration
        return ChatGLM2ForConditionalGeneration(ChatGLM2Config(**mc))
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM(LlamaConfig(**mc))


def main() -> None:
    job = json.loads(sys.argv[1])
    from mindformers.pet import get_pet_model
    net = build(job["family"], job["model_config"])
    net = get_pet_model(net, dict(job["pet_config"]))
    trainable = list(net.trainable_params())
    print(json.dumps({"trainable": int(sum(p.size for p in trainable)),
                      "total": int(sum(p.size for p in net.get_parameters() if not p.name.endswith(BUFFERS))),
                      "lora_names": sorted({p.name for p in trainable})}))


if __name__ == "__main__":
    main()
