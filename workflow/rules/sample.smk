# Sampling: one job per generator, or sample_shards jobs (wildcard shard: '' or '.i-of-n'), each
# writing the images of a contiguous range of indices (image i always from seed + i); a killed job
# continues from its last written batch. An external generator's samples are imported instead.


rule sample_stylegan2:
    input:
        network=network_file,
    output:
        samples="results/samples/{dataset}/{model}{shard}.npy",
        info="results/samples/{dataset}/{model}{shard}.json",
    log:
        "logs/sample/{dataset}.{model}{shard}.log",
    benchmark:
        "results/benchmarks/sample/{dataset}.{model}{shard}.tsv"
    wildcard_constraints:
        model=one_of(models_of("stylegan2")),
        shard=r"(\.\d+-of-\d+)?",
    conda:
        "../envs/train.yaml"
    threads: rule_threads("sample_stylegan2")
    resources:
        **rule_resources("sample_stylegan2"),
    params:
        args=model_options("sample"),
        shard=shard_option,
        gpus=gpus("sample_stylegan2"),
    shell:
        "medmem sample {input.network} {output.samples} {params.args} {params.shard} {params.gpus}"
        " > {log} 2>&1"


rule sample_diffusion:
    input:
        network=network_file,
    output:
        samples="results/samples/{dataset}/{model}{shard}.npy",
        info="results/samples/{dataset}/{model}{shard}.json",
    log:
        "logs/sample/{dataset}.{model}{shard}.log",
    benchmark:
        "results/benchmarks/sample/{dataset}.{model}{shard}.tsv"
    wildcard_constraints:
        model=one_of(models_of("diffusion")),
        shard=r"(\.\d+-of-\d+)?",
    conda:
        "../envs/train.yaml"
    threads: rule_threads("sample_diffusion")
    resources:
        **rule_resources("sample_diffusion"),
    params:
        args=model_options("sample"),
        shard=shard_option,
        gpus=gpus("sample_diffusion"),
    shell:
        "medmem sample {input.network} {output.samples} {params.args} {params.shard} {params.gpus}"
        " > {log} 2>&1"


rule import_samples:
    input:
        samples=external_samples,
        info=data_file("dataset.json"),
    output:
        samples="results/samples/{dataset}/{model}.npy",
        info="results/samples/{dataset}/{model}.json",
        names="results/samples/{dataset}/{model}.csv",
    log:
        "logs/sample/{dataset}.{model}.log",
    benchmark:
        "results/benchmarks/sample/{dataset}.{model}.tsv"
    wildcard_constraints:
        model=one_of(models_of("external")),
    conda:
        "../envs/data.yaml"
    threads: rule_threads("import_samples")
    resources:
        **rule_resources("import_samples"),
    shell:
        "medmem import-samples {input.samples} {output.samples} --info {input.info}"
        " --workers {threads} > {log} 2>&1"
