from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# Names never span folders: unconstrained, {dataset} also matched "brats20/shards".
wildcard_constraints:
    dataset="[^/]+",
    model="[^/]+",
    queries="[^/]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/memorization.smk"
include: "workflow/rules/detector.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/experiment.smk"


rule all:
    input:
        final_outputs(),
