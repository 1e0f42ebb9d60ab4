# Sampling: one job per model, or sample_shards jobs, each writing the images of a contiguous range
# of indices (image i always from seed + i); a killed job continues from its last written batch.


rule sample_stylegan2:
    input:
        network="results/train/{dataset}/stylegan2/network.pt",
    output:
        samples=sample_path("stylegan2", ".npy"),
        info=sample_path("stylegan2", ".json"),
    log:
        sample_record("stylegan2", "logs/sample", ".log"),
    benchmark:
        sample_record("stylegan2", "results/benchmarks/sample", ".tsv")
    wildcard_constraints:
        shard=r"\d+-of-\d+",
    conda:
        "../envs/train.yaml"
    threads: rule_threads("sample_stylegan2")
    resources:
        **rule_resources("sample_stylegan2"),
    params:
        args=sample_args("stylegan2"),
        shard=shard_option,
        gpus=gpus("sample_stylegan2"),
    shell:
        "medmem sample {input.network} {output.samples} {params.args} {params.shard} {params.gpus}"
        " > {log} 2>&1"


rule sample_diffusion:
    input:
        network="results/train/{dataset}/diffusion/network.pt",
    output:
        samples=sample_path("diffusion", ".npy"),
        info=sample_path("diffusion", ".json"),
    log:
        sample_record("diffusion", "logs/sample", ".log"),
    benchmark:
        sample_record("diffusion", "results/benchmarks/sample", ".tsv")
    wildcard_constraints:
        shard=r"\d+-of-\d+",
    conda:
        "../envs/train.yaml"
    threads: rule_threads("sample_diffusion")
    resources:
        **rule_resources("sample_diffusion"),
    params:
        args=sample_args("diffusion"),
        shard=shard_option,
        gpus=gpus("sample_diffusion"),
    shell:
        "medmem sample {input.network} {output.samples} {params.args} {params.shard} {params.gpus}"
        " > {log} 2>&1"
