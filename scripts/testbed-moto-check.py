#!/usr/bin/env python3
"""Proves, with boto3, that the test bed's moto (scripts/testbed-moto.py) answers what meshctl
does the way AWS does. Not run by CI: run it by hand after changing the wrapper or moto.

    scripts/testbed-moto-check.py [--keep] [--startup N]

(it re-runs itself with the python of the test bed's moto venv, $MESHCTL_TESTBED_CACHE/venv-moto.)
It starts its own moto through the wrapper on a free port, in a fresh process (nothing of a
running test bed is touched), and stops it at the end. --startup N also measures how long
plain moto_server and the wrapper take to answer their first request (N runs each).

Each step prints "ok <what>"; the first wrong answer stops the script with "FAIL ...", exit 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

CACHE = os.environ.get("MESHCTL_TESTBED_CACHE", os.path.expanduser("~/.cache/meshctl-testbed"))
VENV_PY = os.path.join(CACHE, "venv-moto", "bin", "python")
if os.path.exists(VENV_PY) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(CACHE, "venv-moto")):
    # run inside moto's venv (its boto3; the wrapper needs its moto 5.2.5). Note: the
    # $CACHE/bin/testbed-python symlink does not activate the venv (python looks for
    # pyvenv.cfg next to the path it was started as), so it is not used here.
    os.execv(VENV_PY, [VENV_PY, *sys.argv])
try:
    import boto3
    from botocore.exceptions import ClientError
except ImportError:
    sys.exit(f"boto3 missing: run scripts/testbed setup (it builds {VENV_PY})")

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = ROOT / "scripts" / "testbed-moto.py"
REGION = "us-east-2"
ACCOUNTS = {"shared": "111111111111", "frontend": "222222222222", "backend": "333333333333", "analytics": "444444444444"}
OUTSIDER = "555555555555"  # an account outside the organization
CIDR = {"shared": "10.0.0.0/16", "frontend": "10.1.0.0/16", "backend": "10.2.0.0/16"}
PEERS_MARKER = "  # meshctl:peers\n"  # as src/phases/stacks.rs: indented line, not the mention in a comment


def fail(msg: str) -> None:
    print(f"FAIL {msg}", flush=True)
    raise SystemExit(1)


def ok(msg: str) -> None:
    print(f"ok   {msg}", flush=True)


def check(cond: object, msg: str) -> None:
    if not cond:
        fail(msg)


def expect_error(code: str, fn, *args, **kwargs) -> ClientError:  # type: ignore[no-untyped-def]
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        check(got == code, f"{getattr(fn, '__name__', fn)}: error {got} ({e}), want {code}")
        return e
    fail(f"{getattr(fn, '__name__', fn)}: no error, want {code}")
    raise AssertionError


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true")
    env.pop("MOTO_ACCOUNT_ID", None)
    t0 = time.monotonic()
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(600):
        if proc.poll() is not None:
            fail(f"{cmd} exited: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).read()
            return proc, url, time.monotonic() - t0
        except OSError:
            time.sleep(0.05)
    fail(f"{cmd} not ready after 30 s")
    raise AssertionError


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure_startup(runs: int, logdir: Path) -> None:
    moto_server = Path(sys.executable).parent / "moto_server"
    if not moto_server.exists():
        moto_server = Path(os.path.expanduser("~/.cache/meshctl-testbed/venv-moto/bin/moto_server"))
    for name, cmd in (("moto_server", [str(moto_server)]), ("testbed-moto.py", [sys.executable, str(WRAPPER)])):
        times = []
        for _ in range(runs):
            proc, _url, t = start(cmd, logdir / "startup.log")
            stop(proc)
            times.append(t)
        print(f"startup {name}: " + " ".join(f"{t:.2f}" for t in times) + f" s (median {sorted(times)[len(times) // 2]:.2f} s)")


# ------------------------------------------------------------------ accounts


def sessions(url: str) -> dict[str, boto3.Session]:
    sts = boto3.client("sts", endpoint_url=url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    out = {}
    for name, acct in [*ACCOUNTS.items(), ("outsider", OUTSIDER)]:
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{acct}:role/meshctl-testbed", RoleSessionName=f"check-{name}")["Credentials"]
        out[name] = boto3.Session(aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"], region_name=REGION)
    return out


class Clients:
    def __init__(self, url: str, ss: dict[str, boto3.Session]) -> None:
        self.url = url
        self.ss = ss

    def __call__(self, account: str, service: str):  # type: ignore[no-untyped-def]
        return self.ss[account].client(service, endpoint_url=self.url)


# ------------------------------------------------------------------ CloudFormation as meshctl does it


def peers(cidrs: list[str], tgw: str, table, group: str) -> str:  # type: ignore[no-untyped-def]
    """The per-peer resources meshctl inserts at the marker (src/phases/stacks.rs)."""
    out = ""
    for n, cidr in enumerate(cidrs):
        for az in (1, 2, 3):
            out += f"  RouteToPeer{n}Private{az}:\n    Type: AWS::EC2::Route\n    DependsOn: TransitGatewayAttachment\n    Properties:\n      RouteTableId: {table(az)}\n      DestinationCidrBlock: {cidr}\n      TransitGatewayId: {tgw}\n"
        out += f'  IngressFromPeer{n}:\n    Type: AWS::EC2::SecurityGroupIngress\n    Properties:\n      GroupId: {group}\n      CidrIp: {cidr}\n      IpProtocol: "-1"\n      Description: all traffic from peer VPC {cidr} over the Transit Gateway\n'
    return out


def body(template: str, peer_text: str) -> str:
    text = (ROOT / "templates" / template).read_text()
    if not peer_text:
        return text
    check(PEERS_MARKER in text, f"{template} has the peers marker")
    return text.replace(PEERS_MARKER, PEERS_MARKER + peer_text, 1)


def subnets(cidr: str) -> tuple[str, str]:
    """Six /20s of a /16: three public, three private (as meshctl carves them)."""
    a, b = cidr.split(".")[:2]
    nets = [f"{a}.{b}.{i * 16}.0/20" for i in range(6)]
    return ",".join(nets[:3]), ",".join(nets[3:])


def wait_stack(cfn, name: str, want: set[str]) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(200):
        try:
            s = cfn.describe_stacks(StackName=name)["Stacks"][0]
        except ClientError as e:
            if "does not exist" in str(e) and "DELETE_COMPLETE" in want:
                return {"StackStatus": "DELETE_COMPLETE"}
            raise
        if not s["StackStatus"].endswith("_IN_PROGRESS"):
            check(s["StackStatus"] in want, f"stack {name}: {s['StackStatus']} ({s.get('StackStatusReason')}), want {want}; events: {failed_events(cfn, s['StackId'])}")
            return s
        time.sleep(0.2)
    fail(f"stack {name} still in progress")
    raise AssertionError


def failed_events(cfn, stack: str) -> list[str]:  # type: ignore[no-untyped-def]
    evs = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    return [f"{e['LogicalResourceId']} {e['ResourceStatus']}: {e.get('ResourceStatusReason')}" for e in evs if e["ResourceStatus"].endswith("_FAILED")]


def deploy(cfn, name: str, template_body: str, params: dict[str, str], kind: str = "CREATE", want: set[str] | None = None) -> dict:  # type: ignore[no-untyped-def]
    """CreateChangeSet, wait, ExecuteChangeSet, wait: src/aws/cfn.rs deploy()."""
    cs_name = f"meshctl-{int(time.time() * 1000)}"
    cs = cfn.create_change_set(
        StackName=name,
        ChangeSetName=cs_name,
        ChangeSetType=kind,
        TemplateBody=template_body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(params.items())],
        Tags=[{"Key": "meshctl:managed-by", "Value": "meshctl"}],
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Description="meshctl up",
    )
    for _ in range(100):
        d = cfn.describe_change_set(ChangeSetName=cs["Id"], StackName=name)
        if d["Status"] in ("CREATE_COMPLETE", "FAILED"):
            break
        time.sleep(0.2)
    check(d["Status"] == "CREATE_COMPLETE", f"change set {cs_name} of {name}: {d['Status']} {d.get('StatusReason')}")
    cfn.execute_change_set(ChangeSetName=cs["Id"], StackName=name)
    s = wait_stack(cfn, name, want or {f"{kind}_COMPLETE"})
    expect_error("InvalidChangeSetStatus", cfn.execute_change_set, ChangeSetName=cs["Id"], StackName=name)
    return s


def outputs(stack: dict) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}


def delete_stack(cfn, name: str, want: str = "DELETE_COMPLETE") -> dict:  # type: ignore[no-untyped-def]
    sid = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackId"]
    cfn.delete_stack(StackName=sid)
    if want == "DELETE_COMPLETE":
        s = cfn.describe_stacks(StackName=sid)["Stacks"][0]
        check(s["StackStatus"] == "DELETE_COMPLETE", f"stack {name} after DeleteStack: {s['StackStatus']} {s.get('StackStatusReason')}; events: {failed_events(cfn, sid)}")
        expect_error("ValidationError", cfn.describe_stacks, StackName=name)
        return s
    return wait_stack(cfn, sid, {want})


# ------------------------------------------------------------------ inventory: what must be gone


def inventory(c: Clients, account: str) -> dict[str, list[str]]:
    ec2 = c(account, "ec2")
    default = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v.get("IsDefault")}
    return {
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v["VpcId"] not in default],
        "subnets": [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"] if s["VpcId"] not in default],
        "route_tables": [r["RouteTableId"] for r in ec2.describe_route_tables()["RouteTables"] if r["VpcId"] not in default],
        "security_groups": [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g.get("VpcId") not in default],
        "enis": [n["NetworkInterfaceId"] for n in ec2.describe_network_interfaces()["NetworkInterfaces"]],
        "igws": [i["InternetGatewayId"] for i in ec2.describe_internet_gateways()["InternetGateways"] if not any(a["VpcId"] in default for a in i.get("Attachments", []))],
        "eips": [a.get("AllocationId", a["PublicIp"]) for a in ec2.describe_addresses()["Addresses"]],
        "nat_gateways": [n["NatGatewayId"] for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] != "deleted"],
        "tgws": [t["TransitGatewayId"] for t in ec2.describe_transit_gateways()["TransitGateways"] if t["State"] != "deleted"],
        "tgw_attachments": [a["TransitGatewayAttachmentId"] for a in ec2.describe_transit_gateway_attachments()["TransitGatewayAttachments"] if a["State"] != "deleted"],
        "tgw_route_tables": [r["TransitGatewayRouteTableId"] for r in ec2.describe_transit_gateway_route_tables()["TransitGatewayRouteTables"]],
        "launch_templates": [t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]],
        "eks_clusters": c(account, "eks").list_clusters()["clusters"],
        "shares": [s["name"] for s in c(account, "ram").get_resource_shares(resourceOwner="SELF")["resourceShares"] if s["status"] != "DELETED"],
        "shared_with_me": [s["name"] for s in c(account, "ram").get_resource_shares(resourceOwner="OTHER-ACCOUNTS")["resourceShares"]],
        "roles": sorted(r["RoleName"] for r in c(account, "iam").list_roles()["Roles"]),
        "stacks": [s["StackName"] for s in c(account, "cloudformation").describe_stacks()["Stacks"]],
    }


# ------------------------------------------------------------------ the checks


def setup_organization(c: Clients) -> None:
    org = c("shared", "organizations")
    o = org.create_organization(FeatureSet="ALL")["Organization"]
    for name in ("frontend", "backend", "analytics"):
        h = org.invite_account_to_organization(Target={"Id": ACCOUNTS[name], "Type": "ACCOUNT"})["Handshake"]
        check(h["State"] == "OPEN", f"handshake {h}")
        mine = c(name, "organizations").list_handshakes_for_account()["Handshakes"]
        check([x["Id"] for x in mine] == [h["Id"]], f"{name} sees its invitation: {mine}")
        got = c(name, "organizations").accept_handshake(HandshakeId=h["Id"])["Handshake"]
        check(got["State"] == "ACCEPTED", f"accepted: {got}")
    accts = {a["Id"]: a["JoinedMethod"] for a in org.list_accounts()["Accounts"]}
    check(accts == {"111111111111": "CREATED", "222222222222": "INVITED", "333333333333": "INVITED", "444444444444": "INVITED"}, f"accounts {accts}")
    member_view = c("frontend", "organizations").describe_organization()["Organization"]
    check(member_view["Id"] == o["Id"] and member_view["MasterAccountId"] == "111111111111", f"member sees the organization: {member_view}")
    expect_error("DuplicateAccountException", org.invite_account_to_organization, Target={"Id": ACCOUNTS["frontend"], "Type": "ACCOUNT"})
    h = org.invite_account_to_organization(Target={"Id": OUTSIDER, "Type": "ACCOUNT"})["Handshake"]
    check(c("outsider", "organizations").decline_handshake(HandshakeId=h["Id"])["Handshake"]["State"] == "DECLINED", "decline")
    check(org.describe_handshake(HandshakeId=h["Id"])["Handshake"]["State"] == "DECLINED", "the management account sees the declined handshake")
    expect_error("InvalidHandshakeTransitionException", c("outsider", "organizations").accept_handshake, HandshakeId=h["Id"])
    expect_error("AWSOrganizationsNotInUseException", c("outsider", "organizations").describe_organization)
    check(c("shared", "ram").enable_sharing_with_aws_organization()["returnValue"] is True, "EnableSharingWithAwsOrganization")
    svc = [s["ServicePrincipal"] for s in org.list_aws_service_access_for_organization()["EnabledServicePrincipals"]]
    check("ram.amazonaws.com" in svc, f"RAM trusted access enabled: {svc}")
    ok("organization 111111111111 with 222222222222, 333333333333, 444444444444 (invite + accept handshake; a declined invitation leaves the account out), RAM sharing enabled")


SIZES = {"KubernetesVersion": "1.34", "NodeInstanceType": "t3.medium", "NodeCount": "2", "NodeMaxSize": "4", "NodeDiskSize": "40"}
SPIRE_ROLE = "eks-cluster-shared-spire-server"


def hub_params(c: Clients) -> dict[str, str]:
    pub, priv = subnets(CIDR["shared"])
    return {
        "ClusterName": "eks-cluster-shared",
        "VpcCidr": CIDR["shared"],
        "PublicSubnetCidrs": pub,
        "PrivateSubnetCidrs": priv,
        **SIZES,
        "TransitGatewayName": "tgw-shared",
        "SpireServerRoleName": SPIRE_ROLE,
        "SpireNamespace": "spire",
        "SpireServiceAccount": "spire-server",
    }


def spoke_params(name: str, cidr: str | None = None) -> dict[str, str]:
    pub, priv = subnets(cidr or CIDR[name])
    return {
        "ClusterName": f"eks-cluster-{name}",
        "VpcCidr": cidr or CIDR[name],
        "PublicSubnetCidrs": pub,
        "PrivateSubnetCidrs": priv,
        **SIZES,
        "AccessRoleName": f"eks-cluster-{name}-access-role",
        "HubAccountId": ACCOUNTS["shared"],
        "HubSpireServerRoleName": SPIRE_ROLE,
    }


def check_cluster(c: Clients, account: str, name: str, vpc_id: str) -> dict:
    eks = c(account, "eks")
    cl = eks.describe_cluster(name=name)["cluster"]
    check(cl["status"] == "ACTIVE", f"{name} status {cl['status']}")
    check(cl["arn"] == f"arn:aws:eks:{REGION}:{ACCOUNTS[account]}:cluster/{name}", f"arn {cl['arn']}")
    check(re.fullmatch(rf"https://oidc\.eks\.{REGION}\.amazonaws\.com/id/[0-9A-F]{{32}}", cl["identity"]["oidc"]["issuer"]), f"issuer {cl['identity']}")
    check(re.fullmatch(rf"https://[0-9A-F]{{32}}\.gr7\.{REGION}\.eks\.amazonaws\.com", cl["endpoint"]), f"endpoint {cl['endpoint']}")
    pem = base64.b64decode(cl["certificateAuthority"]["data"]).decode()
    check(pem.startswith("-----BEGIN CERTIFICATE-----"), f"CA data is not a PEM certificate: {pem[:60]}")
    check(cl["version"] == "1.34", f"version {cl['version']}")
    vc = cl["resourcesVpcConfig"]
    check(vc.get("vpcId") == vpc_id, f"vpcId {vc}")
    check(len(vc["subnetIds"]) == 6 and vc["endpointPublicAccess"] is True and vc["endpointPrivateAccess"] is True, f"resourcesVpcConfig {vc}")
    sg = c(account, "ec2").describe_security_groups(GroupIds=[vc["clusterSecurityGroupId"]])["SecurityGroups"][0]
    check(sg["VpcId"] == vpc_id and sg["GroupName"].startswith(f"eks-cluster-sg-{name}-"), f"cluster SG {sg}")
    check(cl["accessConfig"] == {"authenticationMode": "API_AND_CONFIG_MAP", "bootstrapClusterCreatorAdminPermissions": True}, f"accessConfig {cl.get('accessConfig')}")
    ngs = eks.list_nodegroups(clusterName=name)["nodegroups"]
    check(ngs == [f"{name}-nodes"], f"nodegroups {ngs}")
    ng = eks.describe_nodegroup(clusterName=name, nodegroupName=ngs[0])["nodegroup"]
    check(ng["status"] == "ACTIVE" and ng["scalingConfig"] == {"minSize": 1, "maxSize": 4, "desiredSize": 2} and ng["nodeRole"].endswith(f"role/{name}-node-role"), f"nodegroup {ng}")
    entries = eks.list_access_entries(clusterName=name)["accessEntries"]
    node_entry = eks.describe_access_entry(clusterName=name, principalArn=ng["nodeRole"])["accessEntry"]
    check(node_entry["type"] == "EC2_LINUX" and node_entry["username"] == "system:node:{{EC2PrivateDNSName}}", f"node role entry {node_entry}")
    creator = f"arn:aws:iam::{ACCOUNTS[account]}:role/meshctl-testbed"
    check(creator in entries, f"creator's admin entry (bootstrapClusterCreatorAdminPermissions) in {entries}")
    return cl


def check_hub(c: Clients) -> dict[str, str]:
    cfn = c("shared", "cloudformation")
    s = deploy(cfn, "eks-cluster-shared", body("hub.yaml", ""), hub_params(c))
    out = outputs(s)
    want = {"VpcId", "PrivateSubnetIds", "PublicSubnetIds", "PrivateRouteTableIds", "ClusterSecurityGroupId", "NodeRoleArn", "SpireServerRoleArn", "TransitGatewayId"}
    check(set(out) == want, f"hub Outputs {sorted(out)} (want {sorted(want)})")
    check(re.fullmatch(r"tgw-[0-9a-f]+", out["TransitGatewayId"]), f"TransitGatewayId {out['TransitGatewayId']}")
    check(out["NodeRoleArn"] == "arn:aws:iam::111111111111:role/eks-cluster-shared-node-role", f"NodeRoleArn {out['NodeRoleArn']}")
    ok(f"hub stack via CREATE change set: CREATE_COMPLETE, Outputs {sorted(out)}")
    params = {p["ParameterKey"]: p["ParameterValue"] for p in s["Parameters"]}
    check(params == hub_params(c), f"parameters echoed as given: {params}")
    check({"Key": "meshctl:managed-by", "Value": "meshctl"} in s["Tags"], f"stack tags {s['Tags']}")
    ec2 = c("shared", "ec2")
    azs = sorted(s["AvailabilityZone"] for s in ec2.describe_subnets(SubnetIds=out["PrivateSubnetIds"].split(","))["Subnets"])
    check(azs == ["us-east-2a", "us-east-2b", "us-east-2c"], f"!GetAZs \"\" gives the stack region's zones: {azs}")
    vpc = ec2.describe_vpcs(VpcIds=[out["VpcId"]])["Vpcs"][0]
    check(vpc["CidrBlock"] == CIDR["shared"], f"VPC {vpc}")
    vtags = {t["Key"]: t["Value"] for t in vpc.get("Tags", [])}
    check(vtags.get("aws:cloudformation:stack-name") == "eks-cluster-shared" and vtags.get("meshctl:managed-by") == "meshctl", f"stack tags on the VPC: {vtags}")
    res = {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName="eks-cluster-shared")["StackResources"]}
    for lid in ("Cluster", "NodeGroup", "TransitGatewayAttachment", "PodIdentityAgentAddon", "SpireServerPodIdentity", "EbsCsiDriverPodIdentity", "EbsCsiDriverAddon"):
        check(lid in res, f"stack resource {lid} listed: {sorted(res)}")
    check(res["Cluster"]["PhysicalResourceId"] == "eks-cluster-shared", f"Cluster physical id {res['Cluster']}")
    check(res["SpireServerPodIdentity"]["PhysicalResourceId"].startswith("arn:aws:eks:us-east-2:111111111111:podidentityassociation/eks-cluster-shared/a-"), f"association physical id {res['SpireServerPodIdentity']}")
    att = res["TransitGatewayAttachment"]["PhysicalResourceId"]
    a = ec2.describe_transit_gateway_attachments(TransitGatewayAttachmentIds=[att])["TransitGatewayAttachments"][0]
    check(a["TransitGatewayId"] == out["TransitGatewayId"] and a["ResourceId"] == out["VpcId"] and a["State"] == "available", f"hub TGW attachment {a}")
    rts = out["PrivateRouteTableIds"].split(",")
    for rt in ec2.describe_route_tables(RouteTableIds=rts)["RouteTables"]:
        dests = {r.get("DestinationCidrBlock"): r for r in rt["Routes"]}
        check(dests.get("0.0.0.0/0", {}).get("NatGatewayId", "").startswith("nat-"), f"default route through NAT in {rt['RouteTableId']}")
    iam = c("shared", "iam")
    node_policies = sorted(p["PolicyName"] for p in iam.list_attached_role_policies(RoleName="eks-cluster-shared-node-role")["AttachedPolicies"])
    check(node_policies == sorted(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly", "CloudWatchAgentServerPolicy", "ElasticLoadBalancingFullAccess"]), f"node role ManagedPolicyArns attached: {node_policies}")
    inline = iam.list_role_policies(RoleName="eks-cluster-shared-node-role")["PolicyNames"]
    check(inline == [], f"node role inline policy: {inline}")
    eks = c("shared", "eks")
    assocs = eks.list_pod_identity_associations(clusterName="eks-cluster-shared")["associations"]
    got = {}
    for a in assocs:
        d = eks.describe_pod_identity_association(clusterName="eks-cluster-shared", associationId=a["associationId"])["association"]
        got[f"{d['namespace']}/{d['serviceAccount']}"] = d["roleArn"]
    check(got == {"spire/spire-server": f"arn:aws:iam::111111111111:role/{SPIRE_ROLE}", "kube-system/ebs-csi-controller-sa": "arn:aws:iam::111111111111:role/eks-cluster-shared-ebs-csi-driver"}, f"Pod Identity associations {got}")
    expect_error("ResourceInUseException", eks.create_pod_identity_association, clusterName="eks-cluster-shared", namespace="spire", serviceAccount="spire-server", roleArn=f"arn:aws:iam::111111111111:role/{SPIRE_ROLE}")
    check(sorted(eks.list_addons(clusterName="eks-cluster-shared")["addons"]) == ["aws-ebs-csi-driver", "eks-pod-identity-agent"], "add-ons")
    ebs = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="eks-cluster-shared-ebs-csi-driver")["AttachedPolicies"]]
    check(ebs == ["arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"], f"EBS CSI role policies {ebs}")
    ok("hub resources: VPC tagged like CloudFormation, node role's managed policies attached (no inline policy), TGW attachment available, add-ons, Pod Identity associations (API and AWS::EKS::PodIdentityAssociation) and EKS resources listed")
    cl = check_cluster(c, "shared", "eks-cluster-shared", out["VpcId"])
    ok(f"EKS DescribeCluster: ACTIVE, issuer {cl['identity']['oidc']['issuer']}, endpoint, CA PEM, cluster SG, accessConfig, node group, access entries")
    return out


def check_hub_peers(c: Clients, hub_out: dict[str, str]) -> None:
    """The hub's stack per spoke (templates/hub-peer.yaml), as meshctl's stacks/hub-<spoke>."""
    cfn = c("shared", "cloudformation")
    for spoke in ("frontend", "backend"):
        params = {
            "ClusterName": "eks-cluster-shared",
            "SpokeName": spoke,
            "SpokeVpcCidr": CIDR[spoke],
            "SpokeAccountId": ACCOUNTS[spoke],
            "SpokeAccessRoleArn": f"arn:aws:iam::{ACCOUNTS[spoke]}:role/eks-cluster-{spoke}-access-role",
            "SpireServerRoleName": SPIRE_ROLE,
            "TransitGatewayShareName": "multi-account-tgw-share",
            "TransitGatewayId": hub_out["TransitGatewayId"],
            "PrivateRouteTableIds": hub_out["PrivateRouteTableIds"],
            "ClusterSecurityGroupId": hub_out["ClusterSecurityGroupId"],
        }
        s = deploy(cfn, f"eks-cluster-shared-{spoke}", body("hub-peer.yaml", ""), params)
        echoed = {p["ParameterKey"]: p["ParameterValue"] for p in s["Parameters"]}
        check(echoed == params, f"hub-{spoke} parameters echoed as given: {echoed}")
        check(outputs(s)["TransitGatewayShareArn"].startswith("arn:aws:ram:us-east-2:111111111111:resource-share/"), f"share output {outputs(s)}")
    ec2 = c("shared", "ec2")
    for rt in ec2.describe_route_tables(RouteTableIds=hub_out["PrivateRouteTableIds"].split(","))["RouteTables"]:
        tgw_routes = sorted(r["DestinationCidrBlock"] for r in rt["Routes"] if r.get("TransitGatewayId") == hub_out["TransitGatewayId"])
        check(tgw_routes == [CIDR["frontend"], CIDR["backend"]], f"hub routes to the spokes through the TGW in {rt['RouteTableId']}: {rt['Routes']}")
    sg = ec2.describe_security_groups(GroupIds=[hub_out["ClusterSecurityGroupId"]])["SecurityGroups"][0]
    cidrs = sorted(r["CidrIp"] for p in sg["IpPermissions"] for r in p.get("IpRanges", []))
    check(cidrs == [CIDR["frontend"], CIDR["backend"]], f"hub ingress from the spokes: {cidrs}")
    iam = c("shared", "iam")
    names = sorted(iam.list_role_policies(RoleName=SPIRE_ROLE)["PolicyNames"])
    check(names == ["assume-backend-access-role", "assume-frontend-access-role"], f"SPIRE server role's policies (AWS::IAM::Policy): {names}")
    ok("hub stacks per spoke: routes and ingress per spoke CIDR, one TGW share each, the SPIRE server role's policy per spoke")


def check_share_seen_from_spokes(c: Clients, hub_out: dict[str, str]) -> None:
    tgw_arn = f"arn:aws:ec2:{REGION}:111111111111:transit-gateway/{hub_out['TransitGatewayId']}"
    owner_side = c("shared", "ram").get_resource_shares(resourceOwner="SELF", name="multi-account-tgw-share")["resourceShares"]
    check(len(owner_side) == 2 and all(s["status"] == "ACTIVE" for s in owner_side), f"owner side: one share per spoke: {owner_side}")
    principals = []
    for share in owner_side:
        assoc = c("shared", "ram").get_resource_share_associations(associationType="PRINCIPAL", resourceShareArns=[share["resourceShareArn"]])["resourceShareAssociations"]
        check(len(assoc) == 1, f"one principal per share: {assoc}")
        principals += [(a["associatedEntity"], a["status"], a["external"]) for a in assoc]
        res = c("shared", "ram").get_resource_share_associations(associationType="RESOURCE", resourceShareArns=[share["resourceShareArn"]])["resourceShareAssociations"]
        check([a["associatedEntity"] for a in res] == [tgw_arn], f"resource associations {res}")
    check(sorted(principals) == [("222222222222", "ASSOCIATED", False), ("333333333333", "ASSOCIATED", False)], f"principal associations {principals}")
    for spoke in ("frontend", "backend"):
        ram = c(spoke, "ram")
        # src/aws/ram.rs share_state(): invitations first (all pages), then OTHER-ACCOUNTS by name
        invs, token = [], None
        while True:
            page = ram.get_resource_share_invitations(**({"nextToken": token} if token else {}))
            invs += page["resourceShareInvitations"]
            token = page.get("nextToken")
            if not token:
                break
        pending = [i for i in invs if i["resourceShareName"] == "multi-account-tgw-share" and i["senderAccountId"] == "111111111111" and i["status"] == "PENDING"]
        check(pending == [], f"{spoke}: no invitation inside the organization: {invs}")
        shares = ram.get_resource_shares(resourceOwner="OTHER-ACCOUNTS", name="multi-account-tgw-share")["resourceShares"]
        check(any(s["owningAccountId"] == "111111111111" and s["status"] == "ACTIVE" for s in shares), f"{spoke}: OTHER-ACCOUNTS {shares}")
        listed = ram.list_resources(resourceOwner="OTHER-ACCOUNTS")["resources"]
        check([r["arn"] for r in listed] == [tgw_arn], f"{spoke}: ListResources OTHER-ACCOUNTS {listed}")
        tgws = c(spoke, "ec2").describe_transit_gateways()["TransitGateways"]
        check([(t["TransitGatewayId"], t["OwnerId"]) for t in tgws] == [(hub_out["TransitGatewayId"], "111111111111")], f"{spoke}: DescribeTransitGateways lists the shared TGW: {tgws}")
    none = c("analytics", "ram").get_resource_shares(resourceOwner="OTHER-ACCOUNTS", name="multi-account-tgw-share")["resourceShares"]
    check(none == [], f"analytics (not a principal) sees no share: {none}")
    check(c("analytics", "ec2").describe_transit_gateways()["TransitGateways"] == [], "analytics does not see the TGW")
    ok("TGW share ACTIVE from frontend and backend with no invitation (meshctl's share_state sequence), not from analytics")


def check_invitation_path(c: Clients, hub_out: dict[str, str]) -> None:
    """Outside the organization RAM sends an invitation; accepting it associates the share."""
    ram = c("shared", "ram")
    tgw_arn = f"arn:aws:ec2:{REGION}:111111111111:transit-gateway/{hub_out['TransitGatewayId']}"
    share = ram.create_resource_share(name="outsider-share", resourceArns=[tgw_arn], principals=[OUTSIDER], allowExternalPrincipals=True)["resourceShare"]
    assoc = ram.get_resource_share_associations(associationType="PRINCIPAL", resourceShareArns=[share["resourceShareArn"]])["resourceShareAssociations"]
    check([(a["associatedEntity"], a["status"], a["external"]) for a in assoc] == [(OUTSIDER, "ASSOCIATING", True)], f"outsider association {assoc}")
    out_ram = c("outsider", "ram")
    invs = out_ram.get_resource_share_invitations()["resourceShareInvitations"]
    check(len(invs) == 1 and invs[0]["status"] == "PENDING" and invs[0]["senderAccountId"] == "111111111111" and invs[0]["resourceShareName"] == "outsider-share", f"invitation {invs}")
    check(out_ram.get_resource_shares(resourceOwner="OTHER-ACCOUNTS")["resourceShares"] == [], "not visible before accepting")
    acc = out_ram.accept_resource_share_invitation(resourceShareInvitationArn=invs[0]["resourceShareInvitationArn"])["resourceShareInvitation"]
    check(acc["status"] == "ACCEPTED", f"accept {acc}")
    expect_error("ResourceShareInvitationAlreadyAcceptedException", out_ram.accept_resource_share_invitation, resourceShareInvitationArn=invs[0]["resourceShareInvitationArn"])
    seen = out_ram.get_resource_shares(resourceOwner="OTHER-ACCOUNTS", name="outsider-share")["resourceShares"]
    check(len(seen) == 1 and seen[0]["status"] == "ACTIVE", f"after accepting: {seen}")
    no_ext = ram.create_resource_share(name="internal-only", resourceArns=[tgw_arn], principals=[], allowExternalPrincipals=False)["resourceShare"]
    expect_error("OperationNotPermittedException", ram.associate_resource_share, resourceShareArn=no_ext["resourceShareArn"], principals=[OUTSIDER])
    added = ram.associate_resource_share(resourceShareArn=no_ext["resourceShareArn"], principals=["444444444444"])["resourceShareAssociations"]
    check([(a["associatedEntity"], a["status"]) for a in added] == [("444444444444", "ASSOCIATED")], f"associate member {added}")
    for s in (share, no_ext):
        ram.delete_resource_share(resourceShareArn=s["resourceShareArn"])
    check(out_ram.get_resource_shares(resourceOwner="OTHER-ACCOUNTS")["resourceShares"] == [], "deleted share no longer visible")
    ok("outside the organization: PENDING invitation, AcceptResourceShareInvitation -> ACTIVE; allowExternalPrincipals=false refuses outsiders; AssociateResourceShare")


def check_spokes(c: Clients, hub_out: dict[str, str]) -> dict[str, dict[str, str]]:
    res = {}
    for spoke in ("frontend", "backend"):
        cfn = c(spoke, "cloudformation")
        s = deploy(cfn, f"eks-cluster-{spoke}", body("spoke.yaml", ""), spoke_params(spoke))
        out = outputs(s)
        check({"VpcId", "PrivateSubnetIds", "PrivateRouteTableIds", "ClusterSecurityGroupId"} <= set(out), f"{spoke} Outputs {sorted(out)}")
        check_cluster(c, spoke, f"eks-cluster-{spoke}", out["VpcId"])
        role = c(spoke, "iam").get_role(RoleName=f"eks-cluster-{spoke}-access-role")["Role"]
        check(role["Arn"] == f"arn:aws:iam::{ACCOUNTS[spoke]}:role/eks-cluster-{spoke}-access-role", f"access role {role['Arn']}")
        res[spoke] = out
    ok("spoke stacks frontend/backend: CREATE_COMPLETE with Outputs, EKS clusters like the hub's, access roles")
    # spoke TGW stacks: inputs from the base stacks' Outputs, like meshctl's stacks/<spoke>-tgw
    for spoke in ("frontend", "backend"):
        cfn = c(spoke, "cloudformation")
        others = [CIDR[a] for a in ("shared", "frontend", "backend") if a != spoke]
        text = body("spoke-tgw.yaml", peers(others, "!Ref TransitGatewayId", lambda az: f"!Select [{az - 1}, !Ref PrivateRouteTableIds]", "!Ref ClusterSecurityGroupId"))
        out = res[spoke]
        params = {
            "ClusterName": f"eks-cluster-{spoke}",
            "TransitGatewayId": hub_out["TransitGatewayId"],
            "VpcId": out["VpcId"],
            "PrivateSubnetIds": out["PrivateSubnetIds"],
            "PrivateRouteTableIds": out["PrivateRouteTableIds"],
            "ClusterSecurityGroupId": out["ClusterSecurityGroupId"],
        }
        s = deploy(cfn, f"eks-cluster-{spoke}-tgw", text, params)
        echoed = {p["ParameterKey"]: p["ParameterValue"] for p in s["Parameters"]}
        check(echoed == params, f"{spoke}-tgw parameters echoed as given (list types too): {echoed}")
        att_id = cfn.describe_stack_resource(StackName=f"eks-cluster-{spoke}-tgw", LogicalResourceId="TransitGatewayAttachment")["StackResourceDetail"]["PhysicalResourceId"]
        mine = c(spoke, "ec2").describe_transit_gateway_attachments(TransitGatewayAttachmentIds=[att_id])["TransitGatewayAttachments"][0]
        check(mine["TransitGatewayId"] == hub_out["TransitGatewayId"] and mine["ResourceOwnerId"] == ACCOUNTS[spoke] and mine["State"] == "available", f"{spoke} attachment {mine}")
        hub_view = c("shared", "ec2").describe_transit_gateway_attachments(TransitGatewayAttachmentIds=[att_id])["TransitGatewayAttachments"]
        check(len(hub_view) == 1 and hub_view[0]["ResourceId"] == out["VpcId"], f"hub sees the {spoke} attachment: {hub_view}")
        for rt in c(spoke, "ec2").describe_route_tables(RouteTableIds=out["PrivateRouteTableIds"].split(","))["RouteTables"]:
            tgw_routes = sorted(r["DestinationCidrBlock"] for r in rt["Routes"] if r.get("TransitGatewayId") == hub_out["TransitGatewayId"])
            check(tgw_routes == sorted(others), f"{spoke} routes to the peers via the hub's TGW in {rt['RouteTableId']}: {rt['Routes']}")
        sg = c(spoke, "ec2").describe_security_groups(GroupIds=[out["ClusterSecurityGroupId"]])["SecurityGroups"][0]
        cidrs = sorted(r["CidrIp"] for p in sg["IpPermissions"] for r in p.get("IpRanges", []))
        check(cidrs == sorted(others), f"{spoke} ingress from the peers: {cidrs}")
    ok("spoke TGW stacks: attachment to the hub's shared TGW (owned by the spoke, seen by the hub), routes and ingress per peer")
    # UPDATE change set: one peer fewer -> its routes and ingress go, Outputs/parameters refresh
    cfn = c("frontend", "cloudformation")
    out = res["frontend"]
    text = body("spoke-tgw.yaml", peers([CIDR["shared"]], "!Ref TransitGatewayId", lambda az: f"!Select [{az - 1}, !Ref PrivateRouteTableIds]", "!Ref ClusterSecurityGroupId"))
    params = {"ClusterName": "eks-cluster-frontend", "TransitGatewayId": hub_out["TransitGatewayId"], "VpcId": out["VpcId"], "PrivateSubnetIds": out["PrivateSubnetIds"], "PrivateRouteTableIds": out["PrivateRouteTableIds"], "ClusterSecurityGroupId": out["ClusterSecurityGroupId"]}
    deploy(cfn, "eks-cluster-frontend-tgw", text, params, kind="UPDATE")
    for rt in c("frontend", "ec2").describe_route_tables(RouteTableIds=out["PrivateRouteTableIds"].split(","))["RouteTables"]:
        tgw_routes = sorted(r["DestinationCidrBlock"] for r in rt["Routes"] if r.get("TransitGatewayId"))
        check(tgw_routes == [CIDR["shared"]], f"after the update: routes {tgw_routes}")
    tpl = cfn.get_template(StackName="eks-cluster-frontend-tgw", TemplateStage="Original")["TemplateBody"]
    check("RouteToPeer1Private1" not in tpl, "GetTemplate returns the updated template")
    cs = cfn.create_change_set(StackName="eks-cluster-frontend-tgw", ChangeSetName="meshctl-nochange", ChangeSetType="UPDATE", TemplateBody=text, Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()], Capabilities=["CAPABILITY_NAMED_IAM"], Tags=[{"Key": "meshctl:managed-by", "Value": "meshctl"}])
    d = cfn.describe_change_set(ChangeSetName=cs["Id"], StackName="eks-cluster-frontend-tgw")
    check(d["Status"] == "FAILED" and "didn't contain changes" in d["StatusReason"], f"no-change change set: {d['Status']} {d.get('StatusReason')}")
    cfn.delete_change_set(ChangeSetName=cs["Id"], StackName="eks-cluster-frontend-tgw")
    ok("UPDATE change set: removed peer's routes/ingress deleted, template updated; same template again = FAILED 'didn't contain changes'")
    return res


def check_failures(c: Clients) -> None:
    # a VPC attachment to a TGW not shared with the account: like AWS, not found
    ec2 = c("analytics", "ec2")
    hub_tgw = c("shared", "ec2").describe_transit_gateways()["TransitGateways"][0]["TransitGatewayId"]
    vpc = ec2.create_vpc(CidrBlock="10.3.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.3.0.0/20")["Subnet"]["SubnetId"]
    expect_error("InvalidTransitGatewayID.NotFound", ec2.create_transit_gateway_vpc_attachment, TransitGatewayId=hub_tgw, VpcId=vpc, SubnetIds=[sub])
    # a stack whose creation fails rolls back: ROLLBACK_COMPLETE, the reason in the events
    cfn = c("analytics", "cloudformation")
    tpl = {
        "Resources": {
            "Sg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "x", "VpcId": vpc}},
            "Att": {"Type": "AWS::EC2::TransitGatewayAttachment", "Properties": {"TransitGatewayId": hub_tgw, "VpcId": vpc, "SubnetIds": [sub]}, "DependsOn": "Sg"},
        }
    }
    s = deploy(cfn, "not-shared-tgw", json.dumps(tpl), {}, want={"ROLLBACK_COMPLETE"})
    evs = failed_events(cfn, s["StackId"])
    check(any(e.startswith("Att CREATE_FAILED") and "was deleted or does not exist" in e for e in evs), f"failure events {evs}")
    check(len(ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]) == 1, "rollback deleted the security group")
    delete_stack(cfn, "not-shared-tgw")
    # a stack whose AWS::EKS::Cluster name is taken (e.g. a cluster made through the API first)
    c("analytics", "eks").create_cluster(name="eks-cluster-analytics", roleArn="arn:aws:iam::444444444444:role/x", resourcesVpcConfig={"subnetIds": [sub]})
    params = spoke_params("analytics", "10.4.0.0/16")
    before_vpcs = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]}
    s = deploy(cfn, "eks-cluster-analytics", body("spoke.yaml", ""), params, want={"ROLLBACK_COMPLETE"})
    evs = failed_events(cfn, s["StackId"])
    check(evs == ['Cluster CREATE_FAILED: Resource handler returned message: "Cluster already exists with name: eks-cluster-analytics" (HandlerErrorCode: ResourceInUseException)'], f"events {evs}")
    check("Outputs" not in s, f"a rolled back stack has no Outputs: {s.get('Outputs')}")
    check(cfn.describe_stack_resources(StackName="eks-cluster-analytics")["StackResources"] == [], "a rolled back stack has no resources")
    check({v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]} == before_vpcs, "the rollback deleted the VPC, and reading the stack did not create it again")
    delete_stack(cfn, "eks-cluster-analytics")
    c("analytics", "eks").delete_cluster(name="eks-cluster-analytics")
    # Fn::Cidr (moto 5.2.5 has none)
    cidr_tpl = {"Resources": {"V": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.9.0.0/16"}}, "S": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "V"}, "CidrBlock": {"Fn::Select": [2, {"Fn::Cidr": ["10.9.0.0/16", 4, 12]}]}}}}}
    s = deploy(cfn, "cidr", json.dumps(cidr_tpl), {})
    sub_id = cfn.describe_stack_resource(StackName="cidr", LogicalResourceId="S")["StackResourceDetail"]["PhysicalResourceId"]
    got = ec2.describe_subnets(SubnetIds=[sub_id])["Subnets"][0]["CidrBlock"]
    check(got == "10.9.32.0/20", f"Fn::Cidr: {got}")
    delete_stack(cfn, "cidr")
    # DeleteVpc refuses what AWS refuses
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.delete_subnet(SubnetId=sub)
    expect_error("DependencyViolation", ec2.delete_vpc, VpcId=vpc)
    ec2.detach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.delete_internet_gateway(InternetGatewayId=igw)
    ec2.delete_vpc(VpcId=vpc)
    ok("not-shared TGW: InvalidTransitGatewayID.NotFound; failed creation (TGW not shared, cluster name taken) -> ROLLBACK_COMPLETE with the resource's CREATE_FAILED reason, nothing left, no Outputs; Fn::Cidr; DeleteVpc refuses an attached IGW")


def check_eks_api(c: Clients) -> None:
    eks = c("frontend", "eks")
    cl = "eks-cluster-frontend"
    hub_role = "arn:aws:iam::222222222222:role/eks-cluster-frontend-access-role"
    expect_error("ResourceNotFoundException", eks.describe_access_entry, clusterName=cl, principalArn=hub_role)
    e = expect_error("InvalidParameterException", eks.create_access_entry, clusterName=cl, principalArn=hub_role, kubernetesGroups=["system:masters"], type="STANDARD")
    check("cannot start with system:" in str(e), f"system: group refused like EKS: {e}")
    got = eks.create_access_entry(clusterName=cl, principalArn=hub_role, kubernetesGroups=["meshctl:spire-server"], type="STANDARD", tags={"meshctl:managed-by": "meshctl"})["accessEntry"]
    check(got["kubernetesGroups"] == ["meshctl:spire-server"] and got["username"] == "arn:aws:sts::222222222222:assumed-role/eks-cluster-frontend-access-role/{{SessionName}}", f"entry {got}")
    expect_error("ResourceInUseException", eks.create_access_entry, clusterName=cl, principalArn=hub_role)
    up = eks.update_access_entry(clusterName=cl, principalArn=hub_role, kubernetesGroups=["other"])["accessEntry"]
    check(up["kubernetesGroups"] == ["other"], f"update {up}")
    pol = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    a = eks.associate_access_policy(clusterName=cl, principalArn=hub_role, policyArn=pol, accessScope={"type": "cluster"})
    check(a["associatedAccessPolicy"]["policyArn"] == pol, f"associate {a}")
    lst = eks.list_associated_access_policies(clusterName=cl, principalArn=hub_role)["associatedAccessPolicies"]
    check([p["policyArn"] for p in lst] == [pol] and lst[0]["accessScope"]["type"] == "cluster", f"associated {lst}")
    eks.disassociate_access_policy(clusterName=cl, principalArn=hub_role, policyArn=pol)
    eks.delete_access_entry(clusterName=cl, principalArn=hub_role)
    expect_error("ResourceNotFoundException", eks.delete_access_entry, clusterName=cl, principalArn=hub_role)
    ad = eks.create_addon(clusterName=cl, addonName="vpc-cni")["addon"]
    check(ad["status"] == "CREATING", f"addon {ad}")
    check(eks.describe_addon(clusterName=cl, addonName="vpc-cni")["addon"]["status"] == "ACTIVE", "addon ACTIVE")
    check(eks.list_addons(clusterName=cl)["addons"] == ["vpc-cni"], "list addons")
    eks.delete_addon(clusterName=cl, addonName="vpc-cni")
    expect_error("ResourceNotFoundException", eks.describe_addon, clusterName=cl, addonName="vpc-cni")
    # AWS::EKS::Addon and AWS::EKS::AccessEntry in a stack
    cfn = c("frontend", "cloudformation")
    tpl = {
        "Resources": {
            "Cni": {"Type": "AWS::EKS::Addon", "Properties": {"ClusterName": cl, "AddonName": "vpc-cni"}},
            "Entry": {"Type": "AWS::EKS::AccessEntry", "Properties": {"ClusterName": cl, "PrincipalArn": hub_role, "KubernetesGroups": ["meshctl:spire-server"], "AccessPolicies": [{"PolicyArn": pol, "AccessScope": {"Type": "cluster"}}]}},
        },
        "Outputs": {"AddonArn": {"Value": {"Fn::GetAtt": ["Cni", "Arn"]}}, "EntryArn": {"Value": {"Fn::GetAtt": ["Entry", "AccessEntryArn"]}}},
    }
    out = outputs(deploy(cfn, "eks-extras", json.dumps(tpl), {}))
    check(out["AddonArn"].startswith(f"arn:aws:eks:{REGION}:222222222222:addon/{cl}/vpc-cni/") and out["EntryArn"].startswith(f"arn:aws:eks:{REGION}:222222222222:access-entry/{cl}/role/222222222222/eks-cluster-frontend-access-role/"), f"outputs {out}")
    check(eks.describe_access_entry(clusterName=cl, principalArn=hub_role)["accessEntry"]["kubernetesGroups"] == ["meshctl:spire-server"], "entry from the stack")
    check([p["policyArn"] for p in eks.list_associated_access_policies(clusterName=cl, principalArn=hub_role)["associatedAccessPolicies"]] == [pol], "policy from the stack")
    delete_stack(cfn, "eks-extras")
    expect_error("ResourceNotFoundException", eks.describe_access_entry, clusterName=cl, principalArn=hub_role)
    check(eks.list_addons(clusterName=cl)["addons"] == [], "addon deleted with the stack")
    # a cluster made through the API (no accessConfig): CONFIG_MAP, access entries refused like EKS
    sub = c("frontend", "cloudformation").describe_stacks(StackName="eks-cluster-frontend")["Stacks"][0]
    subnets_ = outputs(sub)["PrivateSubnetIds"].split(",")
    made = eks.create_cluster(name="api-made", roleArn="arn:aws:iam::222222222222:role/x", resourcesVpcConfig={"subnetIds": subnets_})["cluster"]
    check(made["accessConfig"]["authenticationMode"] == "CONFIG_MAP" and made["resourcesVpcConfig"]["clusterSecurityGroupId"].startswith("sg-"), f"API cluster {made}")
    expect_error("InvalidRequestException", eks.create_access_entry, clusterName="api-made", principalArn=hub_role)
    eks.delete_cluster(name="api-made")
    ok("EKS access entries (create/describe/update/delete, system: groups refused, access policies) and add-ons, also as AWS::EKS::AccessEntry/Addon; API clusters default to CONFIG_MAP")


def check_appmesh(c: Clients) -> None:
    am = c("shared", "appmesh")
    raw: dict[str, bytes] = {}

    def grab(http_response, **_kw):  # type: ignore[no-untyped-def]
        raw["body"] = http_response.content

    am.meta.events.register("after-call.app-mesh.CreateMesh", grab)
    am.meta.events.register("after-call.appmesh.CreateMesh", grab)
    m = am.create_mesh(meshName="am-multi-account-mesh", spec={"egressFilter": {"type": "ALLOW_ALL"}}, tags=[{"key": "meshctl:managed-by", "value": "meshctl"}])["mesh"]
    doc = json.loads(raw["body"])
    created = doc["metadata"]["createdAt"]  # the payload is the MeshData itself
    check(isinstance(created, (int, float)) and abs(created - time.time()) < 120, f"createdAt as epoch seconds: {created!r}")
    md = m["metadata"]
    check(md["meshOwner"] == "111111111111" and md["resourceOwner"] == "111111111111", f"owners {md}")
    check(md["arn"] == f"arn:aws:appmesh:{REGION}:111111111111:mesh/am-multi-account-mesh", f"arn {md['arn']}")
    listed = am.list_meshes()["meshes"]
    check(listed[0]["meshOwner"] == "111111111111" and hasattr(listed[0]["createdAt"], "year"), f"ListMeshes {listed}")
    expect_error("ConflictException", am.create_mesh, meshName="am-multi-account-mesh")
    expect_error("NotFoundException", am.describe_mesh, meshName="nope")
    # a mesh shared through RAM is used from a spoke with meshOwner
    fam = c("frontend", "appmesh")
    expect_error("NotFoundException", fam.describe_mesh, meshName="am-multi-account-mesh", meshOwner="111111111111")
    share = c("shared", "ram").create_resource_share(name="mesh-share", resourceArns=[md["arn"]], principals=["222222222222"])["resourceShare"]
    seen = fam.describe_mesh(meshName="am-multi-account-mesh", meshOwner="111111111111")["mesh"]["metadata"]
    check(seen["meshOwner"] == "111111111111", f"shared mesh from the spoke: {seen}")
    vn = fam.create_virtual_node(meshName="am-multi-account-mesh", meshOwner="111111111111", virtualNodeName="yelb-ui", spec={})["virtualNode"]["metadata"]
    check(vn["meshOwner"] == "111111111111" and vn["resourceOwner"] == "222222222222", f"virtual node created by the spoke in the hub's mesh: {vn}")
    check(vn["arn"] == f"arn:aws:appmesh:{REGION}:111111111111:mesh/am-multi-account-mesh/virtualNode/yelb-ui", f"virtual node ARN {vn['arn']}")
    fam.delete_virtual_node(meshName="am-multi-account-mesh", meshOwner="111111111111", virtualNodeName="yelb-ui")
    c("shared", "ram").delete_resource_share(resourceShareArn=share["resourceShareArn"])
    expect_error("NotFoundException", fam.describe_mesh, meshName="am-multi-account-mesh", meshOwner="111111111111")
    am.delete_mesh(meshName="am-multi-account-mesh")
    expect_error("NotFoundException", am.delete_mesh, meshName="am-multi-account-mesh")
    ok("App Mesh: createdAt/lastUpdatedAt epoch seconds, meshOwner = account id, ARN .../mesh/<name>, ConflictException, NotFoundException; a mesh shared through RAM used from a spoke (meshOwner)")


def check_elb(c: Clients, vpc_out: dict[str, str]) -> None:
    subnets_ = vpc_out["PublicSubnetIds"].split(",")
    elb = c("frontend", "elb")
    elb.create_load_balancer(LoadBalancerName="k8s-leftover", Listeners=[{"Protocol": "TCP", "LoadBalancerPort": 80, "InstancePort": 30080}], Subnets=subnets_)
    lbs = elb.describe_load_balancers()["LoadBalancerDescriptions"]
    check([(lb["LoadBalancerName"], lb.get("VPCId")) for lb in lbs] == [("k8s-leftover", vpc_out["VpcId"])], f"classic ELB with VPCId: {[(lb['LoadBalancerName'], lb.get('VPCId')) for lb in lbs]}")
    elb.delete_load_balancer(LoadBalancerName="k8s-leftover")
    check(elb.describe_load_balancers()["LoadBalancerDescriptions"] == [], "classic ELB deleted")
    # like AWS, a classic ELB created in a VPC without security groups got a default_elb_<uuid>
    # group, which stays after the ELB is deleted (and blocks DeleteVpc until deleted)
    ec2 = c("frontend", "ec2")
    left = [g for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_out["VpcId"]]}])["SecurityGroups"] if g["GroupName"].startswith("default_elb_")]
    check(len(left) == 1, f"default_elb_ security group left by the classic ELB: {left}")
    ec2.delete_security_group(GroupId=left[0]["GroupId"])
    v2 = c("frontend", "elbv2")
    arn = v2.create_load_balancer(Name="k8s-leftover-nlb", Subnets=subnets_, Type="network", Scheme="internet-facing")["LoadBalancers"][0]["LoadBalancerArn"]
    lb = v2.describe_load_balancers()["LoadBalancers"][0]
    check(lb["VpcId"] == vpc_out["VpcId"], f"ELBv2 VpcId {lb}")
    v2.delete_load_balancer(LoadBalancerArn=arn)
    check(v2.describe_load_balancers()["LoadBalancers"] == [], "ELBv2 deleted")
    ok("classic ELB: DescribeLoadBalancers answers VPCId, DeleteLoadBalancer works (ELBv2 too)")


def check_delete_all(c: Clients, before: dict[str, dict[str, list[str]]]) -> None:
    cfn = c("shared", "cloudformation")
    # the hub's stacks per spoke (routes, share, the SPIRE role's policies) go before the hub's
    # base stack, as in meshctl's down
    for spoke in ("frontend", "backend"):
        delete_stack(cfn, f"eks-cluster-shared-{spoke}")
    # the hub first, while the spokes' attachments still use its TGW: DELETE_FAILED, stack kept
    s = delete_stack(cfn, "eks-cluster-shared", want="DELETE_FAILED")
    check("TransitGateway" in s["StackStatusReason"], f"DELETE_FAILED names the TGW: {s['StackStatusReason']}")
    evs = failed_events(cfn, s["StackId"])
    check(any(e.startswith("TransitGateway DELETE_FAILED") and "IncorrectState" in e for e in evs), f"events {evs}")
    left = [r["LogicalResourceId"] for r in cfn.describe_stack_resources(StackName="eks-cluster-shared")["StackResources"]]
    check(left == ["TransitGateway"], f"only the TGW is left in the stack: {left}")
    check(outputs(s).get("VpcId"), f"a DELETE_FAILED stack keeps its Outputs: {s.get('Outputs')}")
    check(c("shared", "ec2").describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [outputs(s)["VpcId"]]}])["Vpcs"] == [], "the hub VPC is deleted and reading the stack did not create it again")
    ok(f"hub deleted before the spokes' TGW stacks: DELETE_FAILED ({s['StackStatusReason'].strip()}), stack kept")
    for spoke in ("frontend", "backend"):
        delete_stack(c(spoke, "cloudformation"), f"eks-cluster-{spoke}-tgw")
        delete_stack(c(spoke, "cloudformation"), f"eks-cluster-{spoke}")
    delete_stack(cfn, "eks-cluster-shared")
    for account in ACCOUNTS:
        after = inventory(c, account)
        diff = {k: sorted(set(after[k]) - set(before[account][k])) for k in after if set(after[k]) - set(before[account][k])}
        check(not diff, f"{account}: left behind after deleting every stack: {diff}")
    ok("every stack deleted (DELETE_COMPLETE, gone from DescribeStacks); nothing left: no VPC, subnet, route table, SG, ENI, IGW, EIP, NAT, TGW, attachment, EKS cluster, RAM share, role, launch template")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="leave the moto server running at the end (prints its URL)")
    ap.add_argument("--startup", type=int, default=0, metavar="N", help="also measure startup of moto_server vs the wrapper, N runs each")
    args = ap.parse_args()
    import tempfile

    logdir = Path(tempfile.mkdtemp(prefix="testbed-moto-check."))
    if args.startup:
        measure_startup(args.startup, logdir)
    proc, url, t = start([sys.executable, str(WRAPPER)], logdir / "moto.log")
    print(f"moto (wrapper) at {url}, ready in {t:.2f} s; log {logdir / 'moto.log'}")
    try:
        c = Clients(url, sessions(url))
        before = {a: inventory(c, a) for a in ACCOUNTS}
        setup_organization(c)
        hub_out = check_hub(c)
        check_hub_peers(c, hub_out)
        check_share_seen_from_spokes(c, hub_out)
        check_invitation_path(c, hub_out)
        spokes = check_spokes(c, hub_out)
        check_failures(c)
        check_eks_api(c)
        check_appmesh(c)
        check_elb(c, spokes["frontend"])
        check_delete_all(c, before)
        print("all checks passed")
    finally:
        if args.keep:
            print(f"moto left running at {url} (pid {proc.pid})")
        else:
            stop(proc)


if __name__ == "__main__":
    main()
