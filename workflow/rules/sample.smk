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
    threads: rule_threads("sample_stylegan2")
    resources:
        **rule_resources("sample_stylegan2"),
    params:
        args=sample_args("stylegan2"),
        gpus=gpus("sample_stylegan2"),
    shell:
        "medmem sample {input.network} {output.samples} {params.args} {params.gpus} > {log} 2>&1"


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
    threads: rule_threads("sample_diffusion")
    resources:
        **rule_resources("sample_diffusion"),
    params:
        args=sample_args("diffusion"),
        gpus=gpus("sample_diffusion"),
    shell:
        "medmem sample {input.network} {output.samples} {params.args} {params.gpus} > {log} 2>&1"
