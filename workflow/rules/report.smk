rule report:
    input:
        unpack(report_inputs),
    output:
        report="results/{scene}/report.html",
        quality="results/{scene}/quality.json",
    log:
        "logs/report/{scene}.log",
    benchmark:
        "benchmarks/report/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        NEUS_STAGE
        + " --log {log} report --scene-dir results/{wildcards.scene} --benchmarks benchmarks"
        " --out {output.report} --quality {output.quality}"


onsuccess:
    for line in run_summary():
        print(line)
