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
        args=stylegan2_train_args,
    shell:
        "{params.launcher} train stylegan2 results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/stylegan2 {params.args} > {log} 2>&1"
