onstart:
    if DTU_MISSING:
        raise WorkflowError(
            f"DTU data missing under {DTU_ROOT} ({len(DTU_MISSING)} path(s), e.g. {DTU_MISSING[0]}); "
            "see config/dtu.yaml for the expected layout"
        )


rule dtu_masks:
    input:
        masks=dtu_masks_input,
    output:
        directory("results/{scene}/dtu_masks"),
    log:
        "logs/dtu_masks/{scene}.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        photos=lambda wc: scene_row(wc)["photos"],
        masks=lambda wc: Path(DTU_ROOT) / wc.scene / "mask",
    shell:
        PYTHON
        + " -m neus_stage.benchmark link-masks --photos {params.photos:q} --masks {params.masks:q}"
        " --out {output} > {log} 2>&1"


rule benchmark:
    input:
        evals=expand("results/{scene}/eval.json", scene=dtu_scenes()),
    output:
        csv="results/benchmark/benchmark.csv",
        md="results/benchmark/benchmark.md",
        png="results/benchmark/benchmark.png",
    log:
        "logs/benchmark/benchmark.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        PYTHON
        + " -m neus_stage.benchmark aggregate {input.evals} --out results/benchmark"
        " --benchmarks benchmarks > {log} 2>&1"
