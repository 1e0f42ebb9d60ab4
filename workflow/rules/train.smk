# Training: one job (segment_kimg null), or a chain of segment jobs, each ending at a multiple of
# segment_kimg with its checkpoint (temporary: removed once the next segment has its own), then the
# job that writes network.pt. Every job stops before its runtime with a checkpoint (exit status 75);
# the profile's retries or a plain rerun continue from there.


rule train_stylegan2_segment:
    input:
        train="results/data/{dataset}/train.npy",
        info="results/data/{dataset}/dataset.json",
        previous=previous_segment("stylegan2"),
    output:
        checkpoint=temp("results/train/{dataset}/stylegan2/segments/{kimg}kimg.pt"),
    log:
        "logs/train/{dataset}.stylegan2.{kimg}kimg.log",
    benchmark:
        "results/benchmarks/train/{dataset}.stylegan2.{kimg}kimg.tsv"
    wildcard_constraints:
        kimg=r"[0-9.]+",
    conda:
        "../envs/train.yaml"
    threads: rule_threads("train_stylegan2")
    resources:
        **rule_resources("train_stylegan2"),
    params:
        args=train_args("stylegan2"),
        resume=resume_arg("stylegan2"),
        gpus=gpus("train_stylegan2"),
    shell:
        "medmem train stylegan2 results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/stylegan2 {params.args} {params.resume}"
        " --stop-kimg {wildcards.kimg} --segment-output {output.checkpoint}"
        " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"


rule train_stylegan2:
    input:
        train="results/data/{dataset}/train.npy",
        info="results/data/{dataset}/dataset.json",
        previous=previous_segment("stylegan2"),
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
        resume=resume_arg("stylegan2"),
        gpus=gpus("train_stylegan2"),
    shell:
        "medmem train stylegan2 results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/stylegan2 {params.args} {params.resume}"
        " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"


rule train_diffusion_segment:
    input:
        train="results/data/{dataset}/train.npy",
        info="results/data/{dataset}/dataset.json",
        previous=previous_segment("diffusion"),
    output:
        checkpoint=temp("results/train/{dataset}/diffusion/segments/{kimg}kimg.pt"),
    log:
        "logs/train/{dataset}.diffusion.{kimg}kimg.log",
    benchmark:
        "results/benchmarks/train/{dataset}.diffusion.{kimg}kimg.tsv"
    wildcard_constraints:
        kimg=r"[0-9.]+",
    conda:
        "../envs/train.yaml"
    threads: rule_threads("train_diffusion")
    resources:
        **rule_resources("train_diffusion"),
    params:
        args=train_args("diffusion"),
        resume=resume_arg("diffusion"),
        gpus=gpus("train_diffusion"),
    shell:
        "medmem train diffusion results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/diffusion {params.args} {params.resume}"
        " --stop-kimg {wildcards.kimg} --segment-output {output.checkpoint}"
        " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"


rule train_diffusion:
    input:
        train="results/data/{dataset}/train.npy",
        info="results/data/{dataset}/dataset.json",
        previous=previous_segment("diffusion"),
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
        resume=resume_arg("diffusion"),
        gpus=gpus("train_diffusion"),
    shell:
        "medmem train diffusion results/data/{wildcards.dataset}"
        " results/train/{wildcards.dataset}/diffusion {params.args} {params.resume}"
        " --time-limit-min {resources.runtime} {params.gpus} > {log} 2>&1"
