rule report:
    input:
        unpack(report_inputs),
    output:
        "results/{scene}/report.html",
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
        "{NEUS_STAGE} --log {log} report --scene-dir results/{wildcards.scene} --benchmarks benchmarks"
        " --out {output}"


onsuccess:
    for line in run_summary():
        print(line)
