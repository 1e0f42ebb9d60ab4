rule train_stylegan2:
    input:
        train="results/data/{dataset}/train.npy",
        info="results/data/{dataset}/dataset.json",
    output:
        network="results/train/{dataset}/stylegan2/network.pt",
        curve="results/train/{dataset}/stylegan2/log.csv",
    log:
        "logs/train/{dataset}.stylegan2.log",
    benchmark:
        "results/benchmarks/train/{dataset}.stylegan2.tsv"
    conda:
        "../envs/train.yaml"
    threads: rule_threads("train_stylegan2")
    resources:
        **rule_resources("train_stylegan2"),
    params:
        args=train_args("stylegan2"),
        gpus=gpus("train_stylegan2"),
    shell:
        "medmem train stylegan2 results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/stylegan2 {params.args} {params.gpus} > {log} 2>&1"


rule train_diffusion:
    input:
        train="results/data/{dataset}/train.npy",
        info="results/data/{dataset}/dataset.json",
    output:
        network="results/train/{dataset}/diffusion/network.pt",
        curve="results/train/{dataset}/diffusion/log.csv",
    log:
        "logs/train/{dataset}.diffusion.log",
    benchmark:
        "results/benchmarks/train/{dataset}.diffusion.tsv"
    conda:
        "../envs/train.yaml"
    threads: rule_threads("train_diffusion")
    resources:
        **rule_resources("train_diffusion"),
    params:
        args=train_args("diffusion"),
        gpus=gpus("train_diffusion"),
    shell:
        "medmem train diffusion results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/diffusion {params.args} {params.gpus} > {log} 2>&1"
