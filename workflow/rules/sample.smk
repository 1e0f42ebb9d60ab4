rule sample_stylegan2:
    input:
        network="results/train/{dataset}/stylegan2/network.pt",
    output:
        samples="results/samples/{dataset}/stylegan2.npy",
        info="results/samples/{dataset}/stylegan2.json",
    log:
        "logs/sample/{dataset}.stylegan2.log",
    benchmark:
        "results/benchmarks/sample/{dataset}.stylegan2.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=min(model_resource("stylegan2", "gpus"), 1),
        runtime=model_resource("stylegan2", "runtime"),
        mem_mb=model_resource("stylegan2", "mem_mb"),
    params:
        args=sample_args("stylegan2"),
    shell:
        "medmem sample {input.network} {output.samples} {params.args} > {log} 2>&1"


rule sample_diffusion:
    input:
        network="results/train/{dataset}/diffusion/network.pt",
    output:
        samples="results/samples/{dataset}/diffusion.npy",
        info="results/samples/{dataset}/diffusion.json",
    log:
        "logs/sample/{dataset}.diffusion.log",
    benchmark:
        "results/benchmarks/sample/{dataset}.diffusion.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=min(model_resource("diffusion", "gpus"), 1),
        runtime=model_resource("diffusion", "runtime"),
        mem_mb=model_resource("diffusion", "mem_mb"),
    params:
        args=sample_args("diffusion"),
    shell:
        "medmem sample {input.network} {output.samples} {params.args} > {log} 2>&1"
