"""`shipyard capacity` (requests/limits totals and node pools) and `shipyard cost` (monthly cost).

Both default to the `production` environment when the spec has one, else to every environment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..capacity import (
    DEFAULT_EGRESS_GB,
    SEED_004,
    Amounts,
    CapacityTotals,
    Catalog,
    ComponentRow,
    CostComparison,
    NoNodeTypeFitsError,
    OptionsComparison,
    PoolPlan,
    Reconciliation,
    capacity_totals,
    catalogs,
    compare_options,
    comparison_data,
    estimate_costs,
    fit_node_pool,
    format_cores,
    format_gib,
    format_money,
    kind_name,
    limits_note,
    load_catalog,
    options_data,
    pool_data,
    reconcile_with_seed,
    reconciliation_data,
    second_total_label,
    totals_data,
)
from ..spec import Spec, Stack
from ._app import DEFAULT_SPEC, Output, OutputOption, SpecOption, console, emit, read_spec

CapacityEnvOption = Annotated[
    str | None,
    typer.Option(
        "--env",
        "-e",
        help="The environment (default: production if the spec has it, else every one).",
    ),
]
ProviderOption = Annotated[
    list[str] | None,
    typer.Option(
        "--provider",
        "-p",
        help="A provider to price (repeatable; default: every catalog): aws, gcp, digitalocean, hetzner.",
    ),
]
HeadroomOption = Annotated[
    int,
    typer.Option(
        "--headroom",
        min=0,
        max=1000,
        help="Spare capacity to keep above the requests, in percent of the requests.",
    ),
]
EgressOption = Annotated[
    int,
    typer.Option("--egress", min=0, help="Internet egress to price, in GB a month."),
]
MinNodesOption = Annotated[
    int | None,
    typer.Option("--min-nodes", min=1, help="The fewest nodes of a pool (default: 3 in production, else 2)."),
]

CompareOption = Annotated[
    bool,
    typer.Option(
        "--compare",
        help="Each provider's options side by side: one pool or a database pool apart, on-demand,"
        " committed or spot where priced; the cheapest first.",
    ),
]
AsSeedOption = Annotated[
    bool,
    typer.Option(
        "--as-seed",
        help="Price seed 004's own plan (its node types and counts, a database pool, 500 GB of SSD)"
        " and explain, step by step and line by line, why it differs from shipyard's estimate.",
    ),
]

_SYMBOLS = {"USD": "$", "EUR": "€"}


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("capacity")(capacity)
    app.command("cost")(cost)


def _stacks(spec: Spec, env: str | None) -> list[Stack]:
    if env is not None:
        return [spec.stack(env)]
    if "production" in spec.environments:
        return [spec.stack("production")]
    return list(spec.stacks())


def _catalogs(providers: list[str] | None) -> list[Catalog]:
    """The named catalogs (checked before any work, so a typo fails fast), else every one."""
    if not providers:
        return list(catalogs())
    chosen: list[Catalog] = []
    for name in providers:
        catalog = load_catalog(name)
        if catalog not in chosen:
            chosen.append(catalog)
    return chosen


def capacity(
    *,
    file: SpecOption = DEFAULT_SPEC,
    env: CapacityEnvOption = None,
    provider: ProviderOption = None,
    headroom: HeadroomOption = 20,
    min_nodes: MinNodesOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Requests and limits per component at min and max replicas, and node pools.

    CPU is in cores, memory and storage in GiB. Cron jobs and migrations
    are listed apart: they come and go and are not in the totals.
    Each provider's node pool is its cheapest node type that holds every
    pod's requests plus the headroom (see `shipyard cost`).
    Default environment: production if the spec has it, else every one.
    """
    spec = read_spec(file)
    stacks = _stacks(spec, env)
    chosen = _catalogs(provider)
    reports: list[dict[str, Any]] = []
    for stack in stacks:
        totals = capacity_totals(stack)
        plans: list[PoolPlan] = []
        unavailable: list[tuple[str, str]] = []
        for catalog in chosen:
            try:
                plans.append(fit_node_pool(totals, catalog, headroom_percent=headroom, min_nodes=min_nodes))
            except NoNodeTypeFitsError as exc:
                unavailable.append((catalog.provider, exc.message))
        reports.append(
            {
                **totals_data(totals),
                "node_pools": [pool_data(plan) for plan in plans],
                "unavailable": [{"provider": p, "reason": why} for p, why in unavailable],
            }
        )
        if output is Output.table:
            _print_totals(totals)
            _print_pools(plans, unavailable, headroom)
    emit({"stack": stacks[0].name, "environments": reports}, output)


def cost(
    *,
    file: SpecOption = DEFAULT_SPEC,
    env: CapacityEnvOption = None,
    provider: ProviderOption = None,
    headroom: HeadroomOption = 20,
    egress: EgressOption = DEFAULT_EGRESS_GB,
    min_nodes: MinNodesOption = None,
    compare: CompareOption = False,
    as_seed: AsSeedOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Monthly cost per provider, line by line, cheapest first.

    Nodes (the cheapest pool that holds the requests plus the headroom)
    + block storage for every volume + one load balancer when a service
    has an ingress + the Kubernetes control plane + egress beyond what
    is included. List prices come from the catalogs shipped with
    shipyard, each with its date and source page; other currencies are
    converted to USD at the catalog's dated rate to compare providers.
    Default environment: production if the spec has it, else every one.
    """
    spec = read_spec(file)
    stacks = _stacks(spec, env)
    names = [catalog.provider for catalog in _catalogs(provider)]
    if compare or as_seed:
        _cost_views(stacks, names, headroom, egress, min_nodes, compare, as_seed, output)
        return
    comparisons: list[CostComparison] = []
    for stack in stacks:
        comparison = estimate_costs(
            capacity_totals(stack),
            names,
            headroom_percent=headroom,
            egress_gb=egress,
            min_nodes=min_nodes,
        )
        comparisons.append(comparison)
        if output is Output.table:
            _print_costs(comparison, headroom)
    emit(
        {
            "stack": stacks[0].name,
            "environments": [comparison_data(comparison) for comparison in comparisons],
        },
        output,
    )


def _cost_views(
    stacks: list[Stack],
    names: list[str],
    headroom: int,
    egress: int,
    min_nodes: int | None,
    compare: bool,
    as_seed: bool,
    output: Output,
) -> None:
    """`cost --compare` and `cost --as-seed` (seed 004 prices GKE, EKS, DOKS and Hetzner)."""
    reports: list[dict[str, Any]] = []
    for stack in stacks:
        totals = capacity_totals(stack)
        report: dict[str, Any] = {"environment": stack.environment}
        if compare:
            options = compare_options(
                totals, names, headroom_percent=headroom, egress_gb=egress, min_nodes=min_nodes
            )
            report["compare"] = options_data(options)
            if output is Output.table:
                _print_options(options)
        if as_seed:
            seeded = [name for name in names if name in SEED_004]
            reconciliations = [
                reconcile_with_seed(
                    totals,
                    load_catalog(name),
                    headroom_percent=headroom,
                    egress_gb=egress,
                    min_nodes=min_nodes,
                )
                for name in seeded
            ]
            report["as_seed"] = [reconciliation_data(item) for item in reconciliations]
            if output is Output.table:
                for item in reconciliations:
                    _print_reconciliation(item)
        reports.append(report)
    emit({"stack": stacks[0].name, "environments": reports}, output)


# --- tables for people -----------------------------------------------------------------------


def _figure(text: str) -> str:
    return "-" if text == "0" else text


def _amount_cells(amounts: Amounts, limits_missing: tuple[str, ...] = ()) -> list[str]:
    # A limit the spec does not give is "none" (the pod may use its node's), never "-" (zero).
    return [
        _figure(format_cores(amounts.cpu_request)),
        "none" if "cpu" in limits_missing else _figure(format_cores(amounts.cpu_limit)),
        _figure(format_gib(amounts.memory_request)),
        "none" if "memory" in limits_missing else _figure(format_gib(amounts.memory_limit)),
        _figure(format_gib(amounts.storage)),
    ]


def _totals_table(totals: CapacityTotals, at: str) -> Table:
    title = "minimum" if at == "min" else "maximum"
    table = Table(
        title=f"{totals.stack} / {totals.environment}: resources at {title} replicas",
        caption="CPU in cores; RAM and storage in GiB",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("Component")  # a total's note on rows without a limit may wrap
    for heading in ("Replicas", "CPU req", "CPU lim", "RAM req", "RAM lim", "Storage"):
        table.add_column(heading, justify="right", no_wrap=True)
    without_limit = {row.name for row in totals.limits_missing}

    def add_rows(rows: tuple[ComponentRow, ...]) -> None:
        for row in rows:
            replicas = row.replicas_min if at == "min" else row.replicas_max
            amounts = row.at_min if at == "min" else row.at_max
            count = "-" if row.pod is None else str(replicas)
            missing = row.pod.limits_missing if row.pod is not None else ()
            table.add_row(row.name, count, *_amount_cells(amounts, missing))

    def total(label: str, amounts: Amounts, rows: tuple[ComponentRow, ...]) -> None:
        note = limits_note(sum(row.name in without_limit for row in rows))
        table.add_row(f"{label} {note}".rstrip(), "", *_amount_cells(amounts), style="bold")

    add_rows(totals.rows)
    table.add_section()
    total("TOTAL", totals.at_min if at == "min" else totals.at_max, totals.rows)
    if totals.second_rows:
        table.add_section()
        add_rows(totals.second_rows)
        table.add_section()
        second = totals.second_at_min if at == "min" else totals.second_at_max
        label = second_total_label(bool(totals.exporters), bool(totals.control_plane))
        total(label, second, (*totals.rows, *totals.second_rows))
    return table


def _print_totals(totals: CapacityTotals) -> None:
    console.print(_totals_table(totals, "min"))
    if totals.at_max != totals.at_min:
        console.print(_totals_table(totals, "max"))
    else:
        console.print("No autoscaling: the totals at maximum replicas are the same.")
    if totals.transient:
        console.print("Not in the totals (they come and go):")
        for item in totals.transient:
            when = f" on {item.schedule!r}" if item.schedule else " before each rollout"
            pod = item.pod
            console.print(
                f"  {item.kind} {item.name}{when}: {format_cores(pod.cpu_request)}"
                f"/{format_cores(pod.cpu_limit)} cores, {format_gib(pod.memory_request)}"
                f"/{format_gib(pod.memory_limit)} GiB per run; {item.note}"
            )
    console.print()


def _percent(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%" if whole else "-"


def _print_pools(plans: list[PoolPlan], unavailable: list[tuple[str, str]], headroom: int) -> None:
    table = Table(
        title=f"Node pool per provider (headroom {headroom} %, cheapest node type that fits)",
        caption="Size and allocatable per node in vCPU/GiB; nodes at min–max replicas; used ="
        " CPU/RAM requests and reserve at min replicas over the pool's allocatable",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for heading in ("Provider", "Node type", "Size", "Alloc."):
        table.add_column(heading, no_wrap=True)
    for heading in ("Nodes", "Used", "Nodes/mo"):
        table.add_column(heading, justify="right", no_wrap=True)
    for plan in plans:
        fit = plan.chosen
        node = fit.node_type
        low = fit.at_min
        table.add_row(
            plan.provider,
            node.name,
            f"{node.vcpu}/{node.memory_gib}",
            f"{format_cores(fit.allocatable_cpu)}/{format_gib(fit.allocatable_memory)}",
            f"{low.nodes}–{fit.at_max.nodes}",
            f"{_percent(low.cpu_requested, low.nodes * fit.allocatable_cpu)}/"
            f"{_percent(low.memory_requested, low.nodes * fit.allocatable_memory)}",
            _money(fit.monthly_at_min, _currency(plan.provider)),
        )
    console.print(table)
    for provider, why in unavailable:
        console.print(f"{provider}: {why}")
    console.print(
        "Allocatable is a node's capacity less GKE's kube-reserved rule and a 100 MiB eviction"
        " threshold; `shipyard cost` prices the whole cluster."
    )
    console.print()


def _currency(provider: str) -> str:
    return load_catalog(provider).currency


def _money(amount: Decimal, currency: str, *, exact: bool = False) -> str:
    """Cents, or (`exact`) every decimal of a unit price up to four, e.g. €0.044 a GB."""
    text = format_money(amount)
    if exact and amount != amount.quantize(Decimal("0.01")):
        text = f"{round(amount, 4).normalize():,f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def _print_costs(comparison: CostComparison, headroom: int) -> None:
    for estimate in comparison.estimates:
        foreign = estimate.currency != "USD"
        table = Table(
            title=f"{estimate.title}, {estimate.region} ({comparison.stack} /"
            f" {comparison.environment}, prices as of {estimate.as_of})",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("Item")
        table.add_column("Qty", justify="right", no_wrap=True)
        table.add_column("Unit price", justify="right", no_wrap=True)
        table.add_column(f"{estimate.currency}/month", justify="right", no_wrap=True)
        if foreign:
            table.add_column("USD/month", justify="right", no_wrap=True)
        for item in estimate.items:
            cells = [
                item.description,
                str(item.quantity),
                f"{_money(item.unit_price, estimate.currency, exact=True)}/{item.unit}",
                _money(item.monthly, estimate.currency),
            ]
            table.add_row(*cells, *([_money(item.monthly_usd, "USD")] if foreign else []))
        table.add_section()
        total = ["TOTAL", "", "", _money(estimate.total, estimate.currency)]
        table.add_row(*total, *([_money(estimate.total_usd, "USD")] if foreign else []), style="bold")
        console.print(table)
        fit = estimate.pool.chosen
        console.print(
            f"At maximum replicas: {fit.at_max.nodes} × {fit.node_type.name},"
            f" {_money(estimate.total_at_max, estimate.currency)} a month."
        )
        for note in estimate.notes:
            console.print(f"  note: {note}")
        console.print()
    summary = Table(
        title=f"Monthly cost, cheapest first (headroom {headroom} %)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for heading in ("#", "Provider", "Node pool"):
        summary.add_column(heading)
    summary.add_column("USD/month", justify="right", no_wrap=True)
    summary.add_column("at max replicas", justify="right", no_wrap=True)
    for rank, estimate in enumerate(comparison.estimates, start=1):
        fit = estimate.pool.chosen
        summary.add_row(
            str(rank),
            estimate.provider,
            f"{fit.at_min.nodes}–{fit.at_max.nodes} × {fit.node_type.name}",
            _money(estimate.total_usd, "USD"),
            _money(estimate.total_usd_at_max, "USD"),
        )
    console.print(summary)
    for provider, why in comparison.unavailable:
        console.print(f"{provider}: {why}")
    console.print()


def _plain_table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def _print_options(comparison: OptionsComparison) -> None:
    for item in comparison.providers:
        table = _plain_table(
            f"{item.title} ({comparison.stack} / {comparison.environment}): options, cheapest first"
        )
        for heading in ("#", "Option", "Node pools"):
            table.add_column(heading)
        table.add_column("USD/month", justify="right", no_wrap=True)
        table.add_column("at max replicas", justify="right", no_wrap=True)
        for rank, option in enumerate(item.options, start=1):
            pools = ", ".join(
                f"{pool.role}: {pool.plan.chosen.at_min.nodes}–{pool.plan.chosen.at_max.nodes}"
                f" × {pool.plan.chosen.node_type.name}"
                for pool in option.pools
            )
            table.add_row(
                "*" if rank == 1 else str(rank),
                option.option,
                pools,
                _money(option.total_usd, "USD"),
                _money(option.total_usd_at_max, "USD"),
            )
        console.print(table)
        cheapest = item.cheapest
        console.print(f"Cheapest: {cheapest.option}. Its lines:")
        for line in cheapest.items:
            console.print(
                f"  {line.description}: {_money(line.monthly, cheapest.currency)}"
                f" ({line.price.as_of}, {line.price.source})"
            )
        for note in cheapest.notes[1:]:
            console.print(f"  note: {note}")
        for why in item.not_priced:
            console.print(f"  not priced: {why}")
        console.print()
    for provider, why in comparison.unavailable:
        console.print(f"{provider}: {why}")


def _print_reconciliation(item: Reconciliation) -> None:
    steps = _plain_table(f"{item.provider}: from shipyard's estimate to seed 004's plan (USD/month)")
    steps.add_column("Step")
    steps.add_column("Total", justify="right", no_wrap=True)
    steps.add_column("Change", justify="right", no_wrap=True)
    for step in item.steps:
        steps.add_row(step.description, _money(step.total_usd, "USD"), _signed(step.delta_usd))
    console.print(steps)
    lines = _plain_table(f"{item.provider}: seed 004's lines against the same lines at the catalog's prices")
    for heading in ("Line", "Seed 004"):
        lines.add_column(heading)
    for heading in ("Seed", "Catalog", "Difference"):
        lines.add_column(heading, justify="right", no_wrap=True)
    for line in item.lines:
        lines.add_row(
            kind_name(line.kind),
            line.seed or "(not in the seed's plan)",
            _money(line.seed_usd, "USD"),
            _money(line.today_usd, "USD"),
            _signed(line.delta_usd),
        )
    lines.add_section()
    lines.add_row(
        "TOTAL",
        "",
        _money(item.seed_total_usd, "USD"),
        _money(item.as_seed.total_usd, "USD"),
        f"{item.difference_percent:+.1f} %",
        style="bold",
    )
    console.print(lines)
    for note in item.notes:
        console.print(f"  note: {note}")
    console.print()


def _signed(amount: Decimal) -> str:
    if not amount:
        return "-"
    return ("+" if amount > 0 else "−") + _money(abs(amount), "USD")
