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
    threads: 2
    resources:
        gpu=model_resource("stylegan2", "gpus"),
        runtime=model_resource("stylegan2", "runtime"),
        mem_mb=model_resource("stylegan2", "mem_mb"),
    params:
        launcher=launcher("stylegan2"),
        args=train_args("stylegan2"),
    shell:
        "{params.launcher} train stylegan2 results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/stylegan2 {params.args} > {log} 2>&1"


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
    threads: 2
    resources:
        gpu=model_resource("diffusion", "gpus"),
        runtime=model_resource("diffusion", "runtime"),
        mem_mb=model_resource("diffusion", "mem_mb"),
    params:
        launcher=launcher("diffusion"),
        args=train_args("diffusion"),
    shell:
        "{params.launcher} train diffusion results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/diffusion {params.args} > {log} 2>&1"
