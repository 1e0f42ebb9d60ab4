rule inception_features:
    input:
        train="results/data/{dataset}/train.npy",
        info="results/data/{dataset}/dataset.json",
    output:
        "results/quality/{dataset}/train_features.npz",
    log:
        "logs/quality/{dataset}.features.log",
    benchmark:
        "results/benchmarks/quality/{dataset}.features.tsv"
    conda:
        "../envs/quality.yaml"
    threads: 2
    resources:
        gpu=quality_gpus(),
    params:
        args=quality_args(),
    shell:
        "medmem features {input.train} {output} {params.args} > {log} 2>&1"


rule quality:
    input:
        samples="results/samples/{dataset}/{model}.npy",
        features="results/quality/{dataset}/train_features.npz",
    output:
        "results/quality/{dataset}/{model}.json",
    log:
        "logs/quality/{dataset}.{model}.log",
    benchmark:
        "results/benchmarks/quality/{dataset}.{model}.tsv"
    conda:
        "../envs/quality.yaml"
    threads: 2
    resources:
        gpu=quality_gpus(),
    params:
        args=quality_args(),
        kid=f"--kid-subsets {QUALITY['kid_subsets']} --kid-subset-size {QUALITY['kid_subset_size']}",
    shell:
        "medmem quality {input.samples} {input.features} {output} {params.args} {params.kid} > {log} 2>&1"
