#!/usr/bin/env python3
"""moto server of the meshctl test bed, extended where moto 5.2.5 is not AWS.

Runs exactly like `moto_server -H 127.0.0.1 -p PORT` (moto.server.main), after registering
the extensions below. It changes nothing in meshctl: it makes the emulator answer the calls
meshctl makes the way AWS answers them. Every extension is listed in tests/README.md ("Gaps closed") and
proven with boto3 by scripts/testbed-moto-check.py.

  CloudFormation  AWS::EKS::Cluster, ::Nodegroup, ::Addon, ::AccessEntry,
                  ::PodIdentityAssociation, AWS::RAM::ResourceShare, AWS::EC2::TransitGatewayAttachment; a stack made by
                  a CREATE change set is created like CreateStack (Outputs, tags, events);
                  UPDATE change sets refresh Outputs/parameters/template; failed creation rolls
                  back (ROLLBACK_COMPLETE, *_FAILED events with reasons); DeleteStack deletes
                  in reverse dependency order, with delete handlers for Route, route table,
                  association, NAT gateway, EIP, IGW (+ attachment), ingress, TGW, IAM role,
                  and ends DELETE_FAILED (stack kept) when a resource cannot be deleted;
                  list parameters are echoed as the string given; Fn::GetAZs "" gives the
                  stack region's zones; Fn::Cidr; AWS::IAM::Role attaches ManagedPolicyArns;
                  a rolled back or deleted stack's resources are not re-created when read.
  EC2             DeleteVpc / DeleteSubnet refuse what AWS refuses (ENIs, attached IGW,
                  security groups); DeleteNatGateway frees its ENI and EIP; a Transit Gateway
                  shared through RAM is listed, attached to and routed to from the other account.
  EKS             clusters answer like EKS (OIDC issuer id/<32 hex>, endpoint, CA data of a
                  real certificate, cluster security group, accessConfig); access entries and
                  access policies; add-ons; Pod Identity associations.
  RAM             shares inside an Organization with sharing enabled are associated without
                  invitation; outside it an invitation is sent; GetResourceShares
                  resourceOwner=OTHER-ACCOUNTS, name/ARN/status filters,
                  GetResourceShareInvitations, Accept/RejectResourceShareInvitation,
                  Associate/DisassociateResourceShare.
  Organizations   InviteAccountToOrganization / AcceptHandshake (existing accounts join).
  App Mesh        timestamps as epoch seconds, meshOwner/resourceOwner = account id, mesh
                  ARN .../mesh/<name>, NotFoundException/ConflictException like App Mesh; a
                  mesh shared through RAM is used from the other accounts with meshOwner.

Not an AWS API: POST /_testbed/eks-authn/<cluster> is the token authentication webhook of the
test bed's API servers, EKS's authenticator for the tokens of the aws stand-in (see the section
"EKS authentication" below and tests/README.md).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import secrets
import sys
import threading
import uuid
from typing import Any

import moto

if moto.__version__ != "5.2.5":
    # the extensions patch moto's internals as they are in 5.2.5: re-check them on a new moto
    # (scripts/testbed-moto-check.py) and update this line
    sys.exit(f"testbed-moto.py is written for moto 5.2.5, found {moto.__version__} ({moto.__file__})")

from moto.core.common_models import CloudFormationModel  # noqa: E402
from moto.core.exceptions import JsonRESTError, ServiceException  # noqa: E402
from moto.core.responses import ActionResult, BaseResponse, EmptyResult  # noqa: E402
from moto.core.utils import unix_time, utcnow  # noqa: E402

# ============================================================================ helpers

_tls = threading.local()
_orig_setup_class = BaseResponse.setup_class


def _setup_class(self: BaseResponse, request: Any, *args: Any, **kwargs: Any) -> None:
    _orig_setup_class(self, request, *args, **kwargs)
    try:
        _tls.access_key = self.get_access_key()
    except Exception:  # noqa: BLE001 - no credentials: anonymous
        _tls.access_key = None


BaseResponse.setup_class = _setup_class  # type: ignore[method-assign]


def caller_principal_arn(account_id: str) -> str:
    """IAM ARN of the caller of the current request (role of an assumed-role session)."""
    from moto.sts.models import sts_backends

    ak = getattr(_tls, "access_key", None)
    if ak:
        for _acct, _part, sts in sts_backends.iter_backends():
            role = sts.get_assumed_role_from_access_key(ak)
            if role:
                m = re.match(r"arn:(aws[\w-]*):sts::(\d{12}):assumed-role/(.+)/[^/]+$", role.arn)
                if m:
                    return f"arn:{m[1]}:iam::{m[2]}:role/{m[3]}"
    return f"arn:aws:iam::{account_id}:root"


def _camel(value: Any) -> Any:
    """CloudFormation PascalCase properties -> API camelCase (recursively, keys only)."""
    if isinstance(value, dict):
        return {(k[:1].lower() + k[1:]): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def _tags_dict(tags: Any) -> dict[str, str]:
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    return {t["Key"]: t.get("Value", "") for t in tags or []}


def _bool(v: Any, default: bool) -> bool:
    if v is None:
        return default
    if isinstance(v, str):
        return v.lower() == "true"
    return bool(v)


def _error_text(e: BaseException) -> str:
    for attr in ("message", "description"):
        m = getattr(e, attr, None)
        if isinstance(m, str) and m:
            try:
                d = json.loads(m)
                if isinstance(d, dict) and d.get("message"):
                    return str(d["message"])
            except ValueError:
                pass
            return m
    return str(e) or type(e).__name__


def _error_code(e: BaseException) -> str:
    code = getattr(e, "code", None)
    return getattr(e, "error_type", None) or getattr(e, "TYPE", None) or (code if isinstance(code, str) else None) or type(e).__name__


# ============================================================================ EC2

from moto.ec2.exceptions import DependencyViolationError, DuplicateTransitGatewayAttachmentError, EC2ClientError, InvalidTransitGatewayID  # noqa: E402
from moto.ec2.models import EC2Backend, ec2_backends  # noqa: E402
from moto.ec2.models.transit_gateway_attachments import TransitGatewayVpcAttachment  # noqa: E402


def InvalidTransitGatewayNotFound(tgw_id: str) -> Exception:
    return InvalidTransitGatewayID(tgw_id, f"Transit Gateway {tgw_id} was deleted or does not exist.")


def IncorrectState(message: str) -> Exception:
    return EC2ClientError("IncorrectState", message)


_orig_delete_vpc = EC2Backend.delete_vpc
_orig_delete_subnet = EC2Backend.delete_subnet


def _enis(backend: Any) -> list[Any]:
    return list(backend.enis.values())


def delete_vpc(self: Any, vpc_id: str) -> Any:
    # AWS refuses while an internet gateway is attached, a non-default security group or a
    # network interface (NAT gateway, load balancer, EKS) is left in the VPC.
    if any(igw.vpc is not None and igw.vpc.id == vpc_id for igw in self.internet_gateways.values()):
        raise DependencyViolationError(f"The vpc '{vpc_id}' has dependencies and cannot be deleted.")
    if any(getattr(eni.subnet, "vpc_id", None) == vpc_id for eni in _enis(self)):
        raise DependencyViolationError(f"The vpc '{vpc_id}' has dependencies and cannot be deleted.")
    if any(sg.name != "default" for sg in self.groups.get(vpc_id, {}).values()):
        raise DependencyViolationError(f"The vpc '{vpc_id}' has dependencies and cannot be deleted.")
    return _orig_delete_vpc(self, vpc_id)


def delete_subnet(self: Any, subnet_id: str) -> Any:
    if any(getattr(eni.subnet, "id", None) == subnet_id for eni in _enis(self)):
        raise DependencyViolationError(f"The subnet '{subnet_id}' has dependencies and cannot be deleted.")
    return _orig_delete_subnet(self, subnet_id)


EC2Backend.delete_vpc = delete_vpc  # type: ignore[method-assign]
EC2Backend.delete_subnet = delete_subnet  # type: ignore[method-assign]

_orig_delete_nat_gateway = EC2Backend.delete_nat_gateway


def delete_nat_gateway(self: Any, nat_gateway_id: str) -> Any:
    nat = self.nat_gateways.get(nat_gateway_id)
    if nat is None:
        raise EC2ClientError("NatGatewayNotFound", f"The Nat Gateway {nat_gateway_id} was not found")
    nat = _orig_delete_nat_gateway(self, nat_gateway_id)
    # AWS disassociates the Elastic IP and deletes the gateway's network interface.
    eni = getattr(nat, "_eni", None)
    if eni is not None:
        for eip in list(self.addresses):
            if eip.eni is eni:
                self.disassociate_address(address=eip.public_ip)
        self.enis.pop(eni.id, None)
    return nat


EC2Backend.delete_nat_gateway = delete_nat_gateway  # type: ignore[method-assign]


def find_transit_gateway(account_id: str, region: str, tgw_id: str) -> tuple[Any, Any]:
    """(owner backend, TGW) for a TGW of this account or one shared with it through RAM."""
    own = ec2_backends[account_id][region]
    if tgw_id in own.transit_gateways:
        return own, own.transit_gateways[tgw_id]
    for acct, reg, backend in ec2_backends.iter_backends():
        if reg != region or acct == account_id or tgw_id not in backend.transit_gateways:
            continue
        tgw = backend.transit_gateways[tgw_id]
        if ram_resource_shared_with(acct, region, tgw.arn, account_id):
            return backend, tgw
    raise InvalidTransitGatewayNotFound(tgw_id)


_orig_create_tgw_vpc_attachment = EC2Backend.create_transit_gateway_vpc_attachment


def create_transit_gateway_vpc_attachment(
    self: Any,
    transit_gateway_id: str,
    vpc_id: str,
    subnet_ids: list[str],
    tags: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> Any:
    if transit_gateway_id in self.transit_gateways:
        return _orig_create_tgw_vpc_attachment(self, transit_gateway_id, vpc_id, subnet_ids, tags=tags, options=options)
    # A Transit Gateway of another account, shared with this one through RAM: the attachment
    # belongs to this account and is seen by the TGW's owner too.
    owner, tgw = find_transit_gateway(self.account_id, self.region_name, transit_gateway_id)
    self.get_vpc(vpc_id)
    for sid in subnet_ids:
        self.get_subnet(sid)
    for att in owner.transit_gateway_attachments.values():
        if att.transit_gateway_id == transit_gateway_id and getattr(att, "vpc_id", None) == vpc_id:
            raise DuplicateTransitGatewayAttachmentError(transit_gateway_id)
    att = TransitGatewayVpcAttachment(self, transit_gateway=tgw, tags=tags, vpc_id=vpc_id, subnet_ids=subnet_ids, options=options)
    self.transit_gateway_attachments[att.id] = att
    owner.transit_gateway_attachments[att.id] = att
    if tgw.options.get("AutoAcceptSharedAttachments") != "enable":
        att.state = "pendingAcceptance"
    elif tgw.options.get("DefaultRouteTableAssociation", "enable") == "enable":
        owner.set_route_table_association(
            transit_gateway_attachment_id=att.id,
            transit_gateway_route_table_id=tgw.default_route_table.id,
        )
    return att


EC2Backend.create_transit_gateway_vpc_attachment = create_transit_gateway_vpc_attachment  # type: ignore[method-assign]

_orig_delete_tgw_vpc_attachment = EC2Backend.delete_transit_gateway_vpc_attachment


def delete_transit_gateway_vpc_attachment(self: Any, transit_gateway_attachment_id: str) -> Any:
    att = self.transit_gateway_attachments.get(transit_gateway_attachment_id)
    if att is None:
        raise EC2ClientError("InvalidTransitGatewayAttachmentID.NotFound", f"Transit Gateway Attachment {transit_gateway_attachment_id} was deleted or does not exist.")
    # the TGW owner's view of the attachment and its route table association go too
    for _acct, reg, backend in ec2_backends.iter_backends():
        if reg != self.region_name or transit_gateway_attachment_id not in backend.transit_gateway_attachments:
            continue
        for rt in backend.transit_gateways_route_tables.values():
            rt.route_table_associations.pop(transit_gateway_attachment_id, None)
        if backend is not self:
            backend.transit_gateway_attachments.pop(transit_gateway_attachment_id, None)
    return _orig_delete_tgw_vpc_attachment(self, transit_gateway_attachment_id)


EC2Backend.delete_transit_gateway_vpc_attachment = delete_transit_gateway_vpc_attachment  # type: ignore[method-assign]

_orig_delete_transit_gateway = EC2Backend.delete_transit_gateway


def delete_transit_gateway(self: Any, transit_gateway_id: str) -> Any:
    # AWS: IncorrectState while attachments (of any account) are not deleted.
    for _acct, reg, backend in ec2_backends.iter_backends():
        if reg != self.region_name:
            continue
        for att in backend.transit_gateway_attachments.values():
            if att.transit_gateway_id == transit_gateway_id and att.state not in ("deleted", "deleting"):
                raise IncorrectState(f"tgw {transit_gateway_id} has non-deleted Transit Gateway Attachments: {att.id}.")
    tgw = _orig_delete_transit_gateway(self, transit_gateway_id)
    self.transit_gateways_route_tables.pop(getattr(tgw.default_route_table, "id", None), None)
    return tgw


EC2Backend.delete_transit_gateway = delete_transit_gateway  # type: ignore[method-assign]

_orig_describe_transit_gateways = EC2Backend.describe_transit_gateways


def describe_transit_gateways(self: Any, filters: Any, transit_gateway_ids: list[str] | None) -> list[Any]:
    # like AWS, Transit Gateways shared with this account through RAM are listed too (owner: the
    # sharing account)
    own = _orig_describe_transit_gateways(self, filters, transit_gateway_ids)
    shared = []
    for acct, reg, backend in ec2_backends.iter_backends():
        if reg != self.region_name or acct == self.account_id:
            continue
        for tgw in list(backend.transit_gateways.values()):
            if ram_resource_shared_with(acct, reg, tgw.arn, self.account_id):
                shared.append(tgw)
    if shared:
        from moto.ec2.utils import describe_tag_filter
        from moto.utilities.utils import filter_resources

        if transit_gateway_ids:
            shared = [t for t in shared if t.id in transit_gateway_ids]
        if filters:
            shared = describe_tag_filter(filters, filter_resources(shared, filters, (("transit-gateway-id", "id"), ("state", "state"), ("owner-id", "owner_id"))))
    return own + shared


EC2Backend.describe_transit_gateways = describe_transit_gateways  # type: ignore[method-assign]

_orig_create_route = EC2Backend.create_route


def create_route(self: Any, route_table_id: str, destination_cidr_block: str | None, *args: Any, **kwargs: Any) -> Any:
    route = _orig_create_route(self, route_table_id, destination_cidr_block, *args, **kwargs)
    tgw_id = kwargs.get("transit_gateway_id")
    if tgw_id and route.transit_gateway is None:
        # a route to a Transit Gateway shared with this account
        _owner, route.transit_gateway = find_transit_gateway(self.account_id, self.region_name, tgw_id)
    return route


EC2Backend.create_route = create_route  # type: ignore[method-assign]


# ============================================================================ EKS

from moto.eks import responses as eks_responses  # noqa: E402
from moto.eks import urls as eks_urls  # noqa: E402
from moto.eks.exceptions import (  # noqa: E402
    InvalidParameterException as EksInvalidParameter,
    InvalidRequestException as EksInvalidRequest,
    ResourceInUseException as EksInUse,
    ResourceNotFoundException as EksNotFound,
)
from moto.eks.models import EKSBackend, eks_backends  # noqa: E402

EKSResponse = eks_responses.EKSResponse

# new REST paths (the operation itself is resolved from the botocore model)
eks_urls.url_paths.update(
    {
        "{0}/clusters/(?P<name>[^/]+)/access-entries$": EKSResponse.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/access-entries/(?P<rest>.+)$": EKSResponse.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/addons$": EKSResponse.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/addons/(?P<rest>.+)$": EKSResponse.dispatch,
        "{0}/access-policies$": EKSResponse.dispatch,
        "{0}/addons/supported-versions$": EKSResponse.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations$": EKSResponse.dispatch,
        "{0}/clusters/(?P<name>[^/]+)/pod-identity-associations/(?P<rest>.+)$": EKSResponse.dispatch,
    }
)


def _hex32() -> str:
    return secrets.token_hex(16).upper()


def _ca_data(name: str) -> str:
    """base64 of a PEM CA certificate, like EKS's certificateAuthority.data."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


def _cluster_or_404(backend: Any, name: str) -> Any:
    c = backend.clusters.get(name)
    if c is None:
        raise EksNotFound(clusterName=None, nodegroupName=None, fargateProfileName=None, addonName=None, message=f"No cluster found for name: {name}.")
    return c


def _finish_cluster(backend: Any, cluster: Any, access_config: dict[str, Any] | None, creator: str) -> None:
    """Make a moto cluster look like an EKS cluster right after creation."""
    region, account = backend.region_name, backend.account_id
    cluster.identity = {"oidc": {"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{_hex32()}"}}
    cluster.endpoint = f"https://{_hex32()}.gr7.{region}.eks.amazonaws.com"
    cluster.certificate_authority = {"data": _ca_data(cluster.name)}
    cluster.kubernetes_network_config = {"serviceIpv4Cidr": "172.20.0.0/16", "ipFamily": "ipv4", **(cluster.kubernetes_network_config or {})}
    vpc_config = dict(cluster.resources_vpc_config or {})
    vpc_config.setdefault("subnetIds", [])
    vpc_config.setdefault("securityGroupIds", [])
    vpc_config["endpointPublicAccess"] = _bool(vpc_config.get("endpointPublicAccess"), True)
    vpc_config["endpointPrivateAccess"] = _bool(vpc_config.get("endpointPrivateAccess"), False)
    vpc_config.setdefault("publicAccessCidrs", ["0.0.0.0/0"])
    ec2 = ec2_backends[account][region]
    cluster.meshctl_cluster_sg = None
    try:
        vpc_id = ec2.get_subnet(vpc_config["subnetIds"][0]).vpc_id if vpc_config["subnetIds"] else None
    except Exception:  # noqa: BLE001 - subnets unknown to EC2: no VPC to put the cluster SG in
        vpc_id = None
    if vpc_id:
        vpc_config["vpcId"] = vpc_id
        sg_name = f"eks-cluster-sg-{cluster.name}-{secrets.randbelow(10**10):010d}"
        sg = ec2.create_security_group(
            name=sg_name,
            description="EKS created security group applied to ENI that is attached to EKS Control Plane master nodes, as well as any managed workloads.",
            vpc_id=vpc_id,
            tags={"Name": sg_name, f"kubernetes.io/cluster/{cluster.name}": "owned", "aws:eks:cluster-name": cluster.name},
        )
        ec2.authorize_security_group_ingress(group_name_or_id=sg.id, ip_protocol="-1", from_port=None, to_port=None, ip_ranges=[], source_groups=[{"GroupId": sg.id}])
        vpc_config["clusterSecurityGroupId"] = sg.id
        cluster.meshctl_cluster_sg = sg.id
    cluster.resources_vpc_config = vpc_config
    ac = access_config or {}
    mode = ac.get("authenticationMode") or "CONFIG_MAP"
    bootstrap = _bool(ac.get("bootstrapClusterCreatorAdminPermissions"), True)
    cluster.access_config = {"authenticationMode": mode, "bootstrapClusterCreatorAdminPermissions": bootstrap}
    cluster.access_entries = {}
    cluster.addons = {}
    cluster.health = {"issues": []}
    if bootstrap and mode != "CONFIG_MAP" and re.match(r"arn:aws[\w-]*:iam::\d{12}:(role|user)/", creator):
        entry = _new_access_entry(cluster, account, region, creator, [], None, "STANDARD", {})
        entry["associatedAccessPolicies"] = {
            ADMIN_POLICY: {"policyArn": ADMIN_POLICY, "accessScope": {"type": "cluster", "namespaces": []}, "associatedAt": utcnow(), "modifiedAt": utcnow()}
        }


_orig_eks_create_cluster = EKSBackend.create_cluster


def eks_create_cluster(self: Any, name: str, role_arn: str, resources_vpc_config: dict[str, Any], *args: Any, access_config: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    if access_config is None:
        access_config = getattr(_tls, "eks_access_config", None)
    cluster = _orig_eks_create_cluster(self, name, role_arn, resources_vpc_config, *args, **kwargs)
    _finish_cluster(self, cluster, access_config, caller_principal_arn(self.account_id))
    return cluster


EKSBackend.create_cluster = eks_create_cluster  # type: ignore[method-assign]

_orig_eks_create_cluster_response = EKSResponse.create_cluster


def eks_create_cluster_response(self: Any) -> Any:
    # moto's handler drops accessConfig: hand it to the backend through the request's thread
    _tls.eks_access_config = self._get_param("accessConfig")
    try:
        return _orig_eks_create_cluster_response(self)
    finally:
        _tls.eks_access_config = None


EKSResponse.create_cluster = eks_create_cluster_response  # type: ignore[method-assign]

_orig_eks_delete_cluster = EKSBackend.delete_cluster


def eks_delete_cluster(self: Any, name: str) -> Any:
    cluster = _orig_eks_delete_cluster(self, name)
    cluster.status = "DELETING"
    sg = getattr(cluster, "meshctl_cluster_sg", None)
    if sg:
        try:
            ec2_backends[self.account_id][self.region_name].delete_security_group(group_id=sg)
        except Exception:  # noqa: BLE001 - in use: EKS leaves it too
            pass
    return cluster


EKSBackend.delete_cluster = eks_delete_cluster  # type: ignore[method-assign]

_orig_eks_create_nodegroup = EKSBackend.create_nodegroup


def eks_create_nodegroup(self: Any, cluster_name: str, node_role: str, nodegroup_name: str, *args: Any, **kwargs: Any) -> Any:
    ng = _orig_eks_create_nodegroup(self, cluster_name, node_role, nodegroup_name, *args, **kwargs)
    cluster = self.clusters[cluster_name]
    # EKS adds an EC2_LINUX access entry for a managed node group's role (API auth modes)
    entries = getattr(cluster, "access_entries", None)
    if entries is not None and cluster.access_config["authenticationMode"] != "CONFIG_MAP" and node_role not in entries:
        _new_access_entry(cluster, self.account_id, self.region_name, node_role, [], None, "EC2_LINUX", {})
    return ng


EKSBackend.create_nodegroup = eks_create_nodegroup  # type: ignore[method-assign]

# --- access entries
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
ACCESS_POLICIES = [
    "AmazonEKSAdminPolicy",
    "AmazonEKSClusterAdminPolicy",
    "AmazonEKSAdminViewPolicy",
    "AmazonEKSEditPolicy",
    "AmazonEKSViewPolicy",
    "AmazonEKSAutoNodePolicy",
    "AmazonEKSNetworkingPolicy",
    "AmazonEKSLoadBalancingPolicy",
    "AmazonEKSBlockStoragePolicy",
    "AmazonEKSComputePolicy",
]


def _entry_not_found(principal: str) -> Exception:
    return EksNotFound(
        clusterName=None,
        nodegroupName=None,
        fargateProfileName=None,
        addonName=None,
        message=f"The specified principalArn could not be found. You can view your available access entries with 'list-access-entries'.",
    )


def _validate_groups_and_username(groups: list[str], username: str | None) -> None:
    for g in groups:
        if g.startswith("system:"):
            raise EksInvalidParameter(message=f"The kubernetes group name {g} is invalid, it cannot start with system:")
    if username is not None and username.startswith("system:"):
        raise EksInvalidParameter(message="The username must not begin with system:")


def _new_access_entry(cluster: Any, account: str, region: str, principal: str, groups: list[str], username: str | None, etype: str, tags: dict[str, str]) -> dict[str, Any]:
    m = re.match(r"arn:(aws[\w-]*):iam::(\d{12}):(role|user)/(?:.*/)?([^/]+)$", principal)
    if not m:
        raise EksInvalidParameter(message=f"The principalArn parameter format is not valid")
    kind, pacct, pname = m[3], m[2], m[4]
    if username is None:
        if etype == "STANDARD":
            username = f"arn:{m[1]}:sts::{pacct}:assumed-role/{pname}/{{{{SessionName}}}}" if kind == "role" else principal
        else:
            username = "system:node:{{EC2PrivateDNSName}}"
    now = utcnow()
    entry = {
        "clusterName": cluster.name,
        "principalArn": principal,
        "kubernetesGroups": list(groups) if etype == "STANDARD" else (["system:nodes"] if etype.startswith("EC2") else []),
        "accessEntryArn": f"arn:aws:eks:{region}:{account}:access-entry/{cluster.name}/{kind}/{pacct}/{pname}/{uuid.uuid4()}",
        "createdAt": now,
        "modifiedAt": now,
        "tags": dict(tags or {}),
        "username": username,
        "type": etype,
        "associatedAccessPolicies": {},
    }
    cluster.access_entries[principal] = entry
    return entry


def _entry_view(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k != "associatedAccessPolicies"}


def _api_mode_required(cluster: Any) -> None:
    if cluster.access_config["authenticationMode"] == "CONFIG_MAP":
        raise EksInvalidRequest(message="The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] to perform this operation.")


def _entry(self: Any) -> tuple[Any, dict[str, Any]]:
    cluster = _cluster_or_404(self.eks_backend, self._get_param("name"))
    principal = self._get_param("principalArn")
    e = cluster.access_entries.get(principal)
    if e is None:
        raise _entry_not_found(principal)
    return cluster, e


def eks_create_access_entry(self: Any) -> Any:
    cluster = _cluster_or_404(self.eks_backend, self._get_param("name"))
    _api_mode_required(cluster)
    principal = self._get_param("principalArn")
    etype = self._get_param("type") or "STANDARD"
    groups = self._get_param("kubernetesGroups") or []
    username = self._get_param("username")
    if etype == "STANDARD":
        _validate_groups_and_username(groups, username)
    elif groups:
        raise EksInvalidParameter(message=f"kubernetesGroups can't be specified for access entries of type {etype}")
    if principal in cluster.access_entries:
        raise EksInUse(clusterName=cluster.name, nodegroupName=None, addonName=None, message=f"The specified access entry resource is already in use on this cluster.")
    e = _new_access_entry(cluster, self.current_account, self.region, principal, groups, username, etype, self._get_param("tags") or {})
    return ActionResult({"accessEntry": _entry_view(e)})


def eks_describe_access_entry(self: Any) -> Any:
    _cluster, e = _entry(self)
    return ActionResult({"accessEntry": _entry_view(e)})


def eks_update_access_entry(self: Any) -> Any:
    _cluster, e = _entry(self)
    groups = self._get_param("kubernetesGroups")
    username = self._get_param("username")
    if e["type"] == "STANDARD":
        _validate_groups_and_username(groups or [], username)
    if groups is not None:
        e["kubernetesGroups"] = list(groups)
    if username is not None:
        e["username"] = username
    e["modifiedAt"] = utcnow()
    return ActionResult({"accessEntry": _entry_view(e)})


def eks_delete_access_entry(self: Any) -> Any:
    cluster, e = _entry(self)
    del cluster.access_entries[e["principalArn"]]
    return EmptyResult()


def eks_list_access_entries(self: Any) -> Any:
    cluster = _cluster_or_404(self.eks_backend, self._get_param("name"))
    policy = self._get_param("associatedPolicyArn")
    arns = [p for p, e in cluster.access_entries.items() if not policy or policy in e["associatedAccessPolicies"]]
    return ActionResult({"accessEntries": sorted(arns)})


def eks_associate_access_policy(self: Any) -> Any:
    cluster, e = _entry(self)
    policy = self._get_param("policyArn")
    if not re.match(r"arn:aws[\w-]*:eks::aws:cluster-access-policy/(%s)$" % "|".join(ACCESS_POLICIES), policy or ""):
        raise EksInvalidParameter(message=f"The specified policyArn is invalid: {policy}")
    scope = self._get_param("accessScope") or {}
    if scope.get("type") not in ("cluster", "namespace"):
        raise EksInvalidParameter(message="accessScope type must be one of [cluster, namespace]")
    now = utcnow()
    prev = e["associatedAccessPolicies"].get(policy)
    assoc = {
        "policyArn": policy,
        "accessScope": {"type": scope["type"], "namespaces": list(scope.get("namespaces") or [])},
        "associatedAt": prev["associatedAt"] if prev else now,
        "modifiedAt": now,
    }
    e["associatedAccessPolicies"][policy] = assoc
    return ActionResult({"clusterName": cluster.name, "principalArn": e["principalArn"], "associatedAccessPolicy": assoc})


def eks_disassociate_access_policy(self: Any) -> Any:
    _cluster, e = _entry(self)
    policy = self._get_param("policyArn")
    if policy not in e["associatedAccessPolicies"]:
        raise EksNotFound(clusterName=None, nodegroupName=None, fargateProfileName=None, addonName=None, message=f"The specified policyArn is not associated with the access entry.")
    del e["associatedAccessPolicies"][policy]
    return EmptyResult()


def eks_list_associated_access_policies(self: Any) -> Any:
    cluster, e = _entry(self)
    return ActionResult(
        {"clusterName": cluster.name, "principalArn": e["principalArn"], "associatedAccessPolicies": list(e["associatedAccessPolicies"].values())}
    )


def eks_list_access_policies(self: Any) -> Any:
    return ActionResult({"accessPolicies": [{"name": n, "arn": f"arn:aws:eks::aws:cluster-access-policy/{n}"} for n in ACCESS_POLICIES]})


# --- add-ons
ADDON_VERSIONS = {
    "vpc-cni": "v1.20.4-eksbuild.1",
    "coredns": "v1.12.3-eksbuild.1",
    "kube-proxy": "v1.34.0-eksbuild.2",
    "aws-ebs-csi-driver": "v1.48.0-eksbuild.2",
    "eks-pod-identity-agent": "v1.3.9-eksbuild.3",
    "metrics-server": "v0.8.0-eksbuild.2",
}


def _addon_not_found(name: str, cluster: str) -> Exception:
    return EksNotFound(clusterName=cluster, nodegroupName=None, fargateProfileName=None, addonName=name, message=f"No addon: {name} found in cluster: {cluster}")


def create_addon(backend: Any, cluster_name: str, name: str, version: str | None, role: str | None, config: str | None, tags: dict[str, str] | None) -> dict[str, Any]:
    cluster = _cluster_or_404(backend, cluster_name)
    if name not in ADDON_VERSIONS:
        raise EksInvalidParameter(clusterName=cluster_name, addonName=name, message=f"Addon {name} specified is not supported in {cluster.version} kubernetes version")
    if name in cluster.addons:
        raise EksInUse(clusterName=cluster_name, nodegroupName=None, addonName=name, message=f"Addon already exists with name: {name}")
    now = utcnow()
    addon = {
        "addonName": name,
        "clusterName": cluster_name,
        "status": "ACTIVE",
        "addonVersion": version or ADDON_VERSIONS[name],
        "health": {"issues": []},
        "addonArn": f"arn:aws:eks:{backend.region_name}:{backend.account_id}:addon/{cluster_name}/{name}/{uuid.uuid4()}",
        "createdAt": now,
        "modifiedAt": now,
        "tags": dict(tags or {}),
    }
    if role:
        addon["serviceAccountRoleArn"] = role
    if config:
        addon["configurationValues"] = config
    cluster.addons[name] = addon
    return addon


def delete_addon(backend: Any, cluster_name: str, name: str) -> dict[str, Any]:
    cluster = _cluster_or_404(backend, cluster_name)
    addon = cluster.addons.pop(name, None)
    if addon is None:
        raise _addon_not_found(name, cluster_name)
    addon = dict(addon, status="DELETING")
    return addon


def eks_create_addon(self: Any) -> Any:
    addon = create_addon(
        self.eks_backend,
        self._get_param("name"),
        self._get_param("addonName"),
        self._get_param("addonVersion"),
        self._get_param("serviceAccountRoleArn"),
        self._get_param("configurationValues"),
        self._get_param("tags"),
    )
    return ActionResult({"addon": dict(addon, status="CREATING")})


def eks_describe_addon(self: Any) -> Any:
    cluster = _cluster_or_404(self.eks_backend, self._get_param("name"))
    name = self._get_param("addonName")
    if name not in cluster.addons:
        raise _addon_not_found(name, cluster.name)
    return ActionResult({"addon": cluster.addons[name]})


def eks_delete_addon(self: Any) -> Any:
    return ActionResult({"addon": delete_addon(self.eks_backend, self._get_param("name"), self._get_param("addonName"))})


def eks_list_addons(self: Any) -> Any:
    cluster = _cluster_or_404(self.eks_backend, self._get_param("name"))
    return ActionResult({"addons": sorted(cluster.addons)})


def eks_describe_addon_versions(self: Any) -> Any:
    name = self._get_param("addonName")
    out = []
    for n, v in ADDON_VERSIONS.items():
        if name and n != name:
            continue
        out.append({"addonName": n, "type": "networking", "addonVersions": [{"addonVersion": v, "architecture": ["amd64", "arm64"], "compatibilities": [{"clusterVersion": "1.34", "defaultVersion": True}]}], "owner": "aws"})
    return ActionResult({"addons": out})


# --- EKS Pod Identity associations (kept on the cluster: deleted with it, as on EKS)
def _associations(cluster: Any) -> dict[str, dict[str, Any]]:
    if not hasattr(cluster, "pod_identity_associations"):
        cluster.pod_identity_associations = {}
    return cluster.pod_identity_associations


def _association_not_found(assoc_id: str) -> Exception:
    return EksNotFound(clusterName=None, nodegroupName=None, fargateProfileName=None, addonName=None, message=f"No association found for id: {assoc_id}.")


def create_pod_identity_association(backend: Any, cluster_name: str, namespace: str, service_account: str, role_arn: str, tags: dict[str, str] | None) -> dict[str, Any]:
    cluster = _cluster_or_404(backend, cluster_name)
    if not re.match(r"arn:aws[\w-]*:iam::\d{12}:role/", role_arn or ""):
        raise EksInvalidParameter(message=f"Role ARN {role_arn} is not valid")
    for a in _associations(cluster).values():
        if a["namespace"] == namespace and a["serviceAccount"] == service_account:
            raise EksInUse(clusterName=cluster_name, nodegroupName=None, addonName=None, message=f"Association already exists: {a['associationId']}")
    assoc_id = "a-" + secrets.token_hex(9)[:17]
    now = utcnow()
    assoc = {
        "clusterName": cluster_name,
        "namespace": namespace,
        "serviceAccount": service_account,
        "roleArn": role_arn,
        "associationArn": f"arn:aws:eks:{backend.region_name}:{backend.account_id}:podidentityassociation/{cluster_name}/{assoc_id}",
        "associationId": assoc_id,
        "tags": dict(tags or {}),
        "createdAt": now,
        "modifiedAt": now,
        "disableSessionTags": False,
    }
    _associations(cluster)[assoc_id] = assoc
    return assoc


def delete_pod_identity_association(backend: Any, cluster_name: str, assoc_id: str) -> dict[str, Any]:
    cluster = _cluster_or_404(backend, cluster_name)
    assoc = _associations(cluster).pop(assoc_id, None)
    if assoc is None:
        raise _association_not_found(assoc_id)
    return assoc


def eks_create_pod_identity_association(self: Any) -> Any:
    assoc = create_pod_identity_association(
        self.eks_backend, self._get_param("name"), self._get_param("namespace"), self._get_param("serviceAccount"), self._get_param("roleArn"), self._get_param("tags")
    )
    return ActionResult({"association": assoc})


def eks_describe_pod_identity_association(self: Any) -> Any:
    cluster = _cluster_or_404(self.eks_backend, self._get_param("name"))
    assoc_id = self._get_param("associationId")
    if assoc_id not in _associations(cluster):
        raise _association_not_found(assoc_id)
    return ActionResult({"association": _associations(cluster)[assoc_id]})


def eks_delete_pod_identity_association(self: Any) -> Any:
    return ActionResult({"association": delete_pod_identity_association(self.eks_backend, self._get_param("name"), self._get_param("associationId"))})


def eks_list_pod_identity_associations(self: Any) -> Any:
    cluster = _cluster_or_404(self.eks_backend, self._get_param("name"))
    ns, sa = self._get_param("namespace"), self._get_param("serviceAccount")
    out = [
        {k: a[k] for k in ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId")}
        for a in _associations(cluster).values()
        if (not ns or a["namespace"] == ns) and (not sa or a["serviceAccount"] == sa)
    ]
    return ActionResult({"associations": out})


for _fn in (
    eks_create_pod_identity_association,
    eks_describe_pod_identity_association,
    eks_delete_pod_identity_association,
    eks_list_pod_identity_associations,
    eks_create_access_entry,
    eks_describe_access_entry,
    eks_update_access_entry,
    eks_delete_access_entry,
    eks_list_access_entries,
    eks_associate_access_policy,
    eks_disassociate_access_policy,
    eks_list_associated_access_policies,
    eks_list_access_policies,
    eks_create_addon,
    eks_describe_addon,
    eks_delete_addon,
    eks_list_addons,
    eks_describe_addon_versions,
):
    setattr(EKSResponse, _fn.__name__[len("eks_"):], _fn)


# ============================================================================ Organizations

from moto.organizations import models as org_models  # noqa: E402
from moto.organizations.models import FakeAccount, OrganizationsBackend, organizations_backends  # noqa: E402
from moto.organizations.responses import OrganizationsResponse  # noqa: E402


class HandshakeNotFoundException(JsonRESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__("HandshakeNotFoundException", "We can't find a handshake with the HandshakeId that you specified.")


class InvalidHandshakeTransitionException(JsonRESTError):
    code = 400

    def __init__(self, state: str) -> None:
        super().__init__("InvalidHandshakeTransitionException", f"You can't perform the operation on the handshake in its current state ({state}).")


class DuplicateAccountException(JsonRESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__("DuplicateAccountException", "That account is already present in the specified destination.")


_handshakes: dict[str, dict[str, Any]] = {}


def _handshake_view(h: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in h.items() if not k.startswith("_")}


def org_invite_account_to_organization(self: Any) -> str:
    backend: OrganizationsBackend = self.organizations_backend
    if backend.org is None:
        raise org_models.AWSOrganizationsNotInUseException
    target = self._get_param("Target") or {}
    acct = target.get("Id", "")
    if target.get("Type") != "ACCOUNT" or not re.fullmatch(r"\d{12}", acct):
        raise org_models.InvalidInputException("You specified an invalid value.")
    if acct in organizations_backends.master_accounts or any(a.id == acct for a in backend.accounts):
        raise DuplicateAccountException()
    org = backend.org
    hid = "h-" + secrets.token_hex(16)
    now = unix_time()
    h = {
        "Id": hid,
        "Arn": f"arn:aws:organizations::{org.master_account_id}:handshake/{org.id}/invite/{hid}",
        "Parties": [{"Id": org.id, "Type": "ORGANIZATION"}, {"Id": acct, "Type": "ACCOUNT"}],
        "State": "OPEN",
        "RequestedTimestamp": now,
        "ExpirationTimestamp": now + 15 * 86400,
        "Action": "INVITE",
        "Resources": [
            {"Value": org.id, "Type": "ORGANIZATION", "Resources": [{"Value": org.master_account_email, "Type": "MASTER_EMAIL"}, {"Value": "master", "Type": "MASTER_NAME"}, {"Value": org.feature_set, "Type": "ORGANIZATION_FEATURE_SET"}]},
            {"Value": acct, "Type": "ACCOUNT"},
        ],
        "_master": org.master_account_id,
        "_account": acct,
    }
    if self._get_param("Notes"):
        h["Resources"].append({"Value": self._get_param("Notes"), "Type": "NOTES"})
    _handshakes[hid] = h
    return json.dumps({"Handshake": _handshake_view(h)})


def org_accept_handshake(self: Any) -> str:
    h = _handshakes.get(self._get_param("HandshakeId") or "")
    if h is None or h["_account"] != self.current_account:
        raise HandshakeNotFoundException()
    if h["State"] != "OPEN":
        raise InvalidHandshakeTransitionException(h["State"])
    master = organizations_backends[h["_master"]][self.partition]
    org = master.org
    if org is None:
        raise HandshakeNotFoundException()
    # the existing account joins: no OrganizationAccountAccessRole is created for it
    acct = FakeAccount.__new__(FakeAccount)
    acct.type = "ACCOUNT"
    acct.region = org.region
    acct.organization_id = org.id
    acct.master_account_id = org.master_account_id
    acct.create_account_status_id = org_models.utils.make_random_create_account_status_id()
    acct.id = h["_account"]
    acct.name = f"account-{acct.id}"
    acct.email = f"{acct.id}@example.com"
    acct.create_time = utcnow()
    acct.status = "ACTIVE"
    acct.state = "ACTIVE"
    acct.joined_method = "INVITED"
    acct.parent_id = org.root_id
    acct.attached_policies = []
    acct.tags = {}
    master.accounts.append(acct)
    for policy_id in (org_models.utils.DEFAULT_SCP_POLICY_ID, org_models.utils.DEFAULT_RCP_POLICY_ID):
        master.attach_policy(PolicyId=policy_id, TargetId=acct.id)
    organizations_backends.master_accounts[acct.id] = (master.account_id, master.partition)
    h["State"] = "ACCEPTED"
    return json.dumps({"Handshake": _handshake_view(h)})


def org_decline_handshake(self: Any) -> str:
    h = _handshakes.get(self._get_param("HandshakeId") or "")
    if h is None or h["_account"] != self.current_account:
        raise HandshakeNotFoundException()
    if h["State"] != "OPEN":
        raise InvalidHandshakeTransitionException(h["State"])
    h["State"] = "DECLINED"
    return json.dumps({"Handshake": _handshake_view(h)})


def org_cancel_handshake(self: Any) -> str:
    h = _handshakes.get(self._get_param("HandshakeId") or "")
    if h is None or h["_master"] != self.current_account:
        raise HandshakeNotFoundException()
    if h["State"] != "OPEN":
        raise InvalidHandshakeTransitionException(h["State"])
    h["State"] = "CANCELED"
    return json.dumps({"Handshake": _handshake_view(h)})


def org_describe_handshake(self: Any) -> str:
    h = _handshakes.get(self._get_param("HandshakeId") or "")
    if h is None or self.current_account not in (h["_account"], h["_master"]):
        raise HandshakeNotFoundException()
    return json.dumps({"Handshake": _handshake_view(h)})


def org_list_handshakes_for_account(self: Any) -> str:
    return json.dumps({"Handshakes": [_handshake_view(h) for h in _handshakes.values() if h["_account"] == self.current_account]})


def org_list_handshakes_for_organization(self: Any) -> str:
    return json.dumps({"Handshakes": [_handshake_view(h) for h in _handshakes.values() if h["_master"] == self.current_account]})


for _fn in (
    org_invite_account_to_organization,
    org_accept_handshake,
    org_decline_handshake,
    org_cancel_handshake,
    org_describe_handshake,
    org_list_handshakes_for_account,
    org_list_handshakes_for_organization,
):
    setattr(OrganizationsResponse, _fn.__name__[len("org_"):], _fn)


def org_of(account_id: str, partition: str = "aws") -> Any:
    """The FakeOrganization the account belongs to (management or member), or None."""
    backend = organizations_backends[account_id][partition]
    if backend.org is not None:
        return backend
    if account_id in organizations_backends.master_accounts:
        master, part = organizations_backends.master_accounts[account_id]
        return organizations_backends[master][part]
    return None


def ram_sharing_enabled(master_backend: Any) -> bool:
    return any(s.get("ServicePrincipal") == "ram.amazonaws.com" for s in master_backend.services)


# ============================================================================ RAM

from moto.ram import urls as ram_urls  # noqa: E402
from moto.ram.exceptions import InvalidParameterException as RamInvalidParameter  # noqa: E402
from moto.ram.exceptions import UnknownResourceException  # noqa: E402
from moto.ram.models import ResourceShare, ram_backends  # noqa: E402
from moto.ram.responses import ResourceAccessManagerResponse  # noqa: E402

ram_urls.url_paths.update(
    {
        "{0}/getresourceshareinvitations$": ResourceAccessManagerResponse.dispatch,
        "{0}/acceptresourceshareinvitation$": ResourceAccessManagerResponse.dispatch,
        "{0}/rejectresourceshareinvitation$": ResourceAccessManagerResponse.dispatch,
        "{0}/associateresourceshare$": ResourceAccessManagerResponse.dispatch,
        "{0}/disassociateresourceshare$": ResourceAccessManagerResponse.dispatch,
        "{0}/listprincipals$": ResourceAccessManagerResponse.dispatch,
        "{0}/listresources$": ResourceAccessManagerResponse.dispatch,
    }
)


class ModelError(ServiceException):
    """An error serialized by moto with the error shape of the called service's model (HTTP
    status included); defined outside moto.* so that the called service's model is used."""


def RamError(code: str, message: str) -> Exception:
    return ModelError(code, message)


def RamOperationNotPermitted(message: str) -> Exception:
    return ModelError("OperationNotPermittedException", message)


def _share_state(share: Any) -> dict[str, Any]:
    if not hasattr(share, "meshctl_principal_status"):
        share.meshctl_principal_status = {p: "ASSOCIATED" for p in share.principals}
        share.meshctl_tags = {}
        share.meshctl_resource_time = {}
    return share.meshctl_principal_status


def _org_members(master: Any) -> set[str]:
    return {a.id for a in master.accounts}


def _principal_accounts(share: Any, principal: str) -> set[str]:
    """Account ids a principal of a share stands for."""
    if re.fullmatch(r"\d{12}", principal):
        return {principal}
    m = re.match(r"arn:aws[\w-]*:iam::(\d{12}):", principal)
    if m:
        return {m[1]}
    if ":organizations::" in principal:
        master = org_of(share.owning_account_id)
        if master is None:
            return set()
        if ":organization/" in principal:
            return _org_members(master)
        ou_id = principal.rsplit("/", 1)[-1]
        return {a.id for a in master.accounts if a.parent_id == ou_id}
    return set()


def _add_principal(share: Any, principal: str, invitations: list[dict[str, Any]]) -> str:
    """Associate a principal the way RAM does; returns the association status."""
    status = _share_state(share)
    owner = share.owning_account_id
    master = org_of(owner)
    in_org_sharing = master is not None and ram_sharing_enabled(master)
    if ":organizations::" in principal:
        if not in_org_sharing:
            raise RamOperationNotPermitted("Unable to share with organization or organizational unit because sharing with AWS Organizations is not enabled.")
        status[principal] = "ASSOCIATED"
        return "ASSOCIATED"
    accts = _principal_accounts(share, principal)
    acct = next(iter(accts), None)
    if acct == owner:
        raise RamInvalidParameter("The resource share owner cannot be a principal of the resource share.")
    if in_org_sharing and acct in _org_members(master):
        status[principal] = "ASSOCIATED"
        return "ASSOCIATED"
    if not share.allow_external_principals:
        raise RamOperationNotPermitted(f"The resource share {share.arn} does not allow sharing with principals outside your organization.")
    if re.fullmatch(r"\d{12}", principal):
        # outside the organization (or sharing not enabled): an invitation is sent
        status[principal] = "ASSOCIATING"
        invitations.append(
            {
                "resourceShareInvitationArn": f"arn:aws:ram:{share.region}:{owner}:resource-share-invitation/{uuid.uuid4()}",
                "resourceShareName": share.name,
                "resourceShareArn": share.arn,
                "senderAccountId": owner,
                "receiverAccountId": principal,
                "invitationTimestamp": unix_time(),
                "status": "PENDING",
            }
        )
        return "ASSOCIATING"
    status[principal] = "ASSOCIATED"
    return "ASSOCIATED"


def _backend_invitations(backend: Any) -> list[dict[str, Any]]:
    if not hasattr(backend, "meshctl_invitations"):
        backend.meshctl_invitations = []
    return backend.meshctl_invitations


def _find_share(backend: Any, arn: str | None) -> Any:
    share = next((s for s in backend.resource_shares if s.arn == arn), None)
    if share is None:
        raise UnknownResourceException(f"ResourceShare {arn} could not be found.")
    return share


def ram_create_resource_share(backend: Any, name: str, resource_arns: list[str], principals: list[str], allow_external: bool, tags: dict[str, str]) -> Any:
    share = ResourceShare(backend.account_id, backend.region_name, name=name, allowExternalPrincipals=allow_external)
    share.add_resources(resource_arns or [])
    _share_state(share)
    share.meshctl_tags = dict(tags or {})
    share.meshctl_resource_time = {r: utcnow() for r in share.resource_arns}
    pending: list[dict[str, Any]] = []
    for p in principals or []:
        if p in share.principals:
            continue
        share.add_principals([p])  # moto's validation of the principal's syntax
        _add_principal(share, p, pending)
    backend.resource_shares.append(share)
    _backend_invitations(backend).extend(pending)
    return share


def ram_delete_resource_share(backend: Any, arn: str) -> None:
    share = _find_share(backend, arn)
    share.delete()
    for p in _share_state(share):
        share.meshctl_principal_status[p] = "DISASSOCIATED"
    for inv in _backend_invitations(backend):
        if inv["resourceShareArn"] == arn and inv["status"] == "PENDING":
            inv["status"] = "EXPIRED"


def ram_resource_shared_with(owner: str, region: str, resource_arn: str, account_id: str) -> bool:
    """Whether `resource_arn` of `owner` is in an ACTIVE share associated with `account_id`."""
    backend = ram_backends[owner][region]
    for share in backend.resource_shares:
        if share.status != "ACTIVE" or resource_arn not in share.resource_arns:
            continue
        for p, st in _share_state(share).items():
            if st == "ASSOCIATED" and account_id in _principal_accounts(share, p):
                return True
    return False


def _describe_share(share: Any) -> dict[str, Any]:
    d = share.describe()
    tags = getattr(share, "meshctl_tags", {})
    if tags:
        d["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
    return d


def _ram_params(self: Any) -> dict[str, Any]:
    try:
        return json.loads(self.body or "{}")
    except ValueError:
        return {}


def ram_resp_create_resource_share(self: Any) -> str:
    p = _ram_params(self)
    if not p.get("name"):
        raise RamInvalidParameter("The name parameter is required.")
    tags = {t["key"]: t.get("value", "") for t in p.get("tags") or []}
    share = ram_create_resource_share(
        self.ram_backend, p["name"], p.get("resourceArns") or [], p.get("principals") or [], _bool(p.get("allowExternalPrincipals"), True), tags
    )
    d = _describe_share(share)
    d.pop("featureSet", None)
    return json.dumps({"resourceShare": d})


def ram_resp_delete_resource_share(self: Any) -> str:
    ram_delete_resource_share(self.ram_backend, self._get_param("resourceShareArn"))
    return json.dumps({"returnValue": True})


def _shares_visible(self: Any, owner_filter: str) -> list[Any]:
    me = self.current_account
    if owner_filter == "SELF":
        return list(self.ram_backend.resource_shares)
    out = []
    for acct, region, backend in ram_backends.iter_backends():
        if acct == me or region != self.region:
            continue
        for share in backend.resource_shares:
            for p, st in _share_state(share).items():
                if st == "ASSOCIATED" and me in _principal_accounts(share, p):
                    out.append(share)
                    break
    return out


def ram_resp_get_resource_shares(self: Any) -> str:
    p = _ram_params(self)
    owner = p.get("resourceOwner")
    if owner not in ("SELF", "OTHER-ACCOUNTS"):
        raise RamInvalidParameter(f"{owner} is not a valid resource owner. Specify either SELF or OTHER-ACCOUNTS and try again.")
    shares = _shares_visible(self, owner)
    if p.get("name"):
        shares = [s for s in shares if s.name == p["name"]]
    if p.get("resourceShareArns"):
        shares = [s for s in shares if s.arn in p["resourceShareArns"]]
    if p.get("resourceShareStatus"):
        shares = [s for s in shares if s.status == p["resourceShareStatus"]]
    for tf in p.get("tagFilters") or []:
        shares = [s for s in shares if tf.get("tagKey") in getattr(s, "meshctl_tags", {}) and (not tf.get("tagValues") or s.meshctl_tags[tf["tagKey"]] in tf["tagValues"])]
    return json.dumps({"resourceShares": [_describe_share(s) for s in shares]})


def ram_resp_get_resource_share_associations(self: Any) -> str:
    p = _ram_params(self)
    atype = p.get("associationType")
    if atype not in ("PRINCIPAL", "RESOURCE"):
        raise RamInvalidParameter(f"{atype} is not a valid association type. Specify either PRINCIPAL or RESOURCE and try again.")
    wanted_status = p.get("associationStatus")
    out = []
    for share in self.ram_backend.resource_shares:
        if p.get("resourceShareArns") and share.arn not in p["resourceShareArns"]:
            continue
        if atype == "PRINCIPAL":
            items = list(_share_state(share).items())
            if p.get("principal"):
                items = [(e, s) for e, s in items if e == p["principal"]]
        else:
            st = "ASSOCIATED" if share.status == "ACTIVE" else "DISASSOCIATED"
            items = [(r, st) for r in share.resource_arns]
            if p.get("resourceArn"):
                items = [(e, s) for e, s in items if e == p["resourceArn"]]
        for entity, st in items:
            if wanted_status and st != wanted_status:
                continue
            external = False
            if atype == "PRINCIPAL":
                master = org_of(share.owning_account_id)
                accts = _principal_accounts(share, entity)
                external = not (master is not None and accts and accts <= _org_members(master))
            out.append(
                {
                    "resourceShareArn": share.arn,
                    "resourceShareName": share.name,
                    "associatedEntity": entity,
                    "associationType": atype,
                    "status": st,
                    "creationTime": unix_time(share.creation_time),
                    "lastUpdatedTime": unix_time(share.last_updated_time),
                    "external": external,
                }
            )
    return json.dumps({"resourceShareAssociations": out})


def ram_resp_associate_resource_share(self: Any) -> str:
    p = _ram_params(self)
    share = _find_share(self.ram_backend, p.get("resourceShareArn"))
    if share.status != "ACTIVE":
        raise RamError("InvalidStateTransitionException", f"The resource share {share.arn} is in {share.status} state.")
    out = []
    pending: list[dict[str, Any]] = []
    for principal in p.get("principals") or []:
        if principal not in share.principals:
            share.add_principals([principal])
        st = _share_state(share).get(principal)
        if st not in ("ASSOCIATED", "ASSOCIATING"):
            st = _add_principal(share, principal, pending)
        out.append({"resourceShareArn": share.arn, "resourceShareName": share.name, "associatedEntity": principal, "associationType": "PRINCIPAL", "status": st, "external": st == "ASSOCIATING"})
    new = [r for r in p.get("resourceArns") or [] if r not in share.resource_arns]
    share.add_resources(new)
    for r in p.get("resourceArns") or []:
        out.append({"resourceShareArn": share.arn, "resourceShareName": share.name, "associatedEntity": r, "associationType": "RESOURCE", "status": "ASSOCIATED", "external": False})
    _backend_invitations(self.ram_backend).extend(pending)
    share.last_updated_time = utcnow()
    return json.dumps({"resourceShareAssociations": out})


def ram_resp_disassociate_resource_share(self: Any) -> str:
    p = _ram_params(self)
    share = _find_share(self.ram_backend, p.get("resourceShareArn"))
    out = []
    for principal in p.get("principals") or []:
        if principal in share.principals:
            share.principals.remove(principal)
        _share_state(share)[principal] = "DISASSOCIATED"
        out.append({"resourceShareArn": share.arn, "resourceShareName": share.name, "associatedEntity": principal, "associationType": "PRINCIPAL", "status": "DISASSOCIATED", "external": False})
    for r in p.get("resourceArns") or []:
        if r in share.resource_arns:
            share.resource_arns.remove(r)
        out.append({"resourceShareArn": share.arn, "resourceShareName": share.name, "associatedEntity": r, "associationType": "RESOURCE", "status": "DISASSOCIATED", "external": False})
    share.last_updated_time = utcnow()
    return json.dumps({"resourceShareAssociations": out})


def _all_invitations(region: str) -> list[tuple[Any, dict[str, Any]]]:
    return [(b, inv) for _a, reg, b in ram_backends.iter_backends() if reg == region for inv in _backend_invitations(b)]


def ram_resp_get_resource_share_invitations(self: Any) -> str:
    p = _ram_params(self)
    me = self.current_account
    invs = [inv for _b, inv in _all_invitations(self.region) if inv["receiverAccountId"] == me]
    if p.get("resourceShareInvitationArns"):
        invs = [i for i in invs if i["resourceShareInvitationArn"] in p["resourceShareInvitationArns"]]
    if p.get("resourceShareArns"):
        invs = [i for i in invs if i["resourceShareArn"] in p["resourceShareArns"]]
    return json.dumps({"resourceShareInvitations": invs})


def _answer_invitation(self: Any, accept: bool) -> str:
    arn = self._get_param("resourceShareInvitationArn")
    me = self.current_account
    for backend, inv in _all_invitations(self.region):
        if inv["resourceShareInvitationArn"] != arn or inv["receiverAccountId"] != me:
            continue
        if inv["status"] == "ACCEPTED":
            raise RamError("ResourceShareInvitationAlreadyAcceptedException", f"The invitation {arn} has already been accepted.")
        if inv["status"] == "REJECTED":
            raise RamError("ResourceShareInvitationAlreadyRejectedException", f"The invitation {arn} has already been rejected.")
        if inv["status"] == "EXPIRED":
            raise RamError("ResourceShareInvitationExpiredException", f"The invitation {arn} has expired.")
        inv["status"] = "ACCEPTED" if accept else "REJECTED"
        share = next((s for s in backend.resource_shares if s.arn == inv["resourceShareArn"]), None)
        if share is not None:
            _share_state(share)[me] = "ASSOCIATED" if accept else "FAILED"
        return json.dumps({"resourceShareInvitation": inv})
    raise RamError("ResourceShareInvitationArnNotFoundException", f"The invitation {arn} could not be found.")


def ram_resp_accept_resource_share_invitation(self: Any) -> str:
    return _answer_invitation(self, True)


def ram_resp_reject_resource_share_invitation(self: Any) -> str:
    return _answer_invitation(self, False)


def ram_resp_enable_sharing_with_aws_organization(self: Any) -> str:
    backend = organizations_backends[self.current_account][self.partition]
    if backend.org is None:
        # only the management account of an organization can turn it on
        from moto.ram.exceptions import OperationNotPermittedException

        raise OperationNotPermittedException()
    backend.enable_aws_service_access(ServicePrincipal="ram.amazonaws.com")
    return json.dumps({"returnValue": True})


def ram_resp_list_resources(self: Any) -> str:
    p = _ram_params(self)
    out = []
    for share in _shares_visible(self, p.get("resourceOwner") or "SELF"):
        if share.status != "ACTIVE":
            continue
        for r in share.resource_arns:
            if p.get("resourceArns") and r not in p["resourceArns"]:
                continue
            m = re.match(r"arn:aws[\w-]*:([a-z0-9-]+):[^:]*:\d{12}:([a-z-]+)[/:]", r)
            out.append(
                {
                    "arn": r,
                    "type": f"{m[1]}:{''.join(w.capitalize() for w in m[2].split('-'))}" if m else "",
                    "resourceShareArn": share.arn,
                    "status": "AVAILABLE",
                    "creationTime": unix_time(share.creation_time),
                    "lastUpdatedTime": unix_time(share.last_updated_time),
                }
            )
    return json.dumps({"resources": out})


def ram_resp_list_principals(self: Any) -> str:
    p = _ram_params(self)
    out = []
    for share in _shares_visible(self, p.get("resourceOwner") or "SELF"):
        for principal, st in _share_state(share).items():
            if st != "ASSOCIATED":
                continue
            out.append({"id": principal, "resourceShareArn": share.arn, "creationTime": unix_time(share.creation_time), "lastUpdatedTime": unix_time(share.last_updated_time), "external": False})
    return json.dumps({"principals": out})


for _fn in (
    ram_resp_create_resource_share,
    ram_resp_delete_resource_share,
    ram_resp_get_resource_shares,
    ram_resp_get_resource_share_associations,
    ram_resp_associate_resource_share,
    ram_resp_disassociate_resource_share,
    ram_resp_get_resource_share_invitations,
    ram_resp_accept_resource_share_invitation,
    ram_resp_reject_resource_share_invitation,
    ram_resp_enable_sharing_with_aws_organization,
    ram_resp_list_resources,
    ram_resp_list_principals,
):
    setattr(ResourceAccessManagerResponse, _fn.__name__[len("ram_resp_"):], _fn)


# ============================================================================ App Mesh

from moto.appmesh import models as appmesh_models  # noqa: E402
from moto.appmesh.dataclasses.shared import Metadata as AppMeshMetadata  # noqa: E402
from moto.appmesh.responses import AppMeshResponse  # noqa: E402

def _patch_metadata_init(cls: Any) -> None:
    orig = cls.__init__
    fields = cls.__dataclass_fields__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        orig(self, *args, **kwargs)
        # moto's defaults are evaluated once at import: every resource shared one time and uid
        if self.created_at is fields["created_at"].default:
            self.created_at = _dt.datetime.now()
            self.last_updated_at = self.created_at
        if self.uid is fields["uid"].default:
            self.uid = uuid.uuid4().hex
        caller = getattr(_tls, "appmesh_caller", None)
        if caller and caller != self.mesh_owner:
            self.resource_owner = caller

    cls.__init__ = init


for _cls in (AppMeshMetadata, *AppMeshMetadata.__subclasses__()):
    _patch_metadata_init(_cls)


def _appmesh_backend(self: Any) -> Any:
    # a mesh shared through RAM is used from the other accounts with meshOwner=<owner>: the
    # request goes to the owner's mesh; what the caller creates in it is owned by the caller
    owner = self._get_param("meshOwner")
    if owner and owner != self.current_account:
        backend = appmesh_models.appmesh_backends[owner][self.region]
        mesh = backend.meshes.get(self._get_param("meshName") or "")
        if mesh is not None and ram_resource_shared_with(owner, self.region, mesh.metadata.arn, self.current_account):
            _tls.appmesh_caller = self.current_account
            return backend
    return appmesh_models.appmesh_backends[self.current_account][self.region]


AppMeshResponse.appmesh_backend = property(_appmesh_backend)  # type: ignore[assignment]

_orig_create_mesh = appmesh_models.AppMeshBackend.create_mesh


class AppMeshConflict(JsonRESTError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ConflictException", message)


def appmesh_create_mesh(self: Any, client_token: Any, mesh_name: str, *args: Any, **kwargs: Any) -> Any:
    if mesh_name in self.meshes:
        raise AppMeshConflict(f"Mesh with name {mesh_name} already exists.")
    mesh = _orig_create_mesh(self, client_token, mesh_name, *args, **kwargs)
    mesh.metadata.mesh_owner = self.account_id
    mesh.metadata.resource_owner = self.account_id
    mesh.metadata.arn = f"arn:aws:appmesh:{self.region_name}:{self.account_id}:mesh/{mesh_name}"
    return mesh


appmesh_models.AppMeshBackend.create_mesh = appmesh_create_mesh  # type: ignore[method-assign]

_MOTO_APPMESH_TIME = re.compile(r"^\d{2}/\d{2}/\d{4}, \d{2}:\d{2}:\d{2}$")
_APPMESH_ERRORS = {
    "MeshNotFound": ("NotFoundException", 404),
    "ResourceNotFound": ("NotFoundException", 404),
    "VirtualRouterNotFound": ("NotFoundException", 404),
    "RouteNotFound": ("NotFoundException", 404),
    "VirtualNodeNotFound": ("NotFoundException", 404),
    "VirtualGatewayNotFound": ("NotFoundException", 404),
    "GatewayRouteNotFound": ("NotFoundException", 404),
    "VirtualRouterNameAlreadyTaken": ("ConflictException", 409),
    "RouteNameAlreadyTaken": ("ConflictException", 409),
    "VirtualNodeNameAlreadyTaken": ("ConflictException", 409),
    "VirtualGatewayNameAlreadyTaken": ("ConflictException", 409),
    "GatewayRouteNameAlreadyTaken": ("ConflictException", 409),
    "MissingRequiredField": ("BadRequestException", 400),
    "MeshOwnerDoesNotMatch": ("NotFoundException", 404),
}


def _epochs(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("createdAt", "lastUpdatedAt") and isinstance(v, str) and _MOTO_APPMESH_TIME.match(v):
                # moto formats datetime.now() (local time): back to epoch seconds
                out[k] = _dt.datetime.strptime(v, "%d/%m/%Y, %H:%M:%S").timestamp()
            else:
                out[k] = _epochs(v)
        return out
    if isinstance(value, list):
        return [_epochs(v) for v in value]
    return value


_orig_appmesh_call_action = AppMeshResponse.call_action


def appmesh_call_action(self: Any) -> Any:
    _tls.appmesh_caller = None
    status, headers, body = _orig_appmesh_call_action(self)
    _tls.appmesh_caller = None
    try:
        data = json.loads(body) if body else None
    except (ValueError, TypeError):
        return status, headers, body
    if isinstance(data, dict) and status >= 400:
        code = data.get("__type")
        if code in _APPMESH_ERRORS:
            new, st = _APPMESH_ERRORS[code]
            data["__type"] = new
            for k in [k for k in headers if k.lower() == "x-amzn-errortype"]:
                del headers[k]
            headers["x-amzn-ErrorType"] = new
            headers["status"] = str(st)
            return st, headers, json.dumps(data)
        return status, headers, body
    if data is not None:
        body = json.dumps(_epochs(data))
    return status, headers, body


AppMeshResponse.call_action = appmesh_call_action  # type: ignore[method-assign]


# ============================================================================ CloudFormation

from moto.cloudformation import parsing as cfn_parsing  # noqa: E402
from moto.cloudformation.exceptions import ValidationError as CfnValidationError  # noqa: E402
from moto.cloudformation.models import CloudFormationBackend, Event, Stack, cloudformation_backends  # noqa: E402
from moto.cloudformation.parsing import ResourceMap  # noqa: E402


def _stack_by_id(account_id: str, region: str, stack_id: str) -> Any:
    backend = cloudformation_backends[account_id][region]
    return backend.stacks.get(stack_id) or backend.deleted_stacks.get(stack_id)


def _resource_event(stack: Any, logical_id: str, rtype: str, physical: str, status: str, reason: str | None = None) -> None:
    if stack is None:
        return
    stack.events.append(
        Event(
            stack_id=stack.stack_id,
            stack_name=stack.name,
            logical_resource_id=logical_id,
            physical_resource_id=physical or "",
            resource_type=rtype,
            resource_status=status,
            resource_status_reason=reason,
            resource_properties=None,
        )
    )


# --- the resource types moto skips

class _Cfn:
    """Shared bits of the CloudFormation models below (each also subclasses CloudFormationModel
    directly: moto finds models through CloudFormationModel.__subclasses__())."""

    ATTRS: tuple[str, ...] = ()

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRS

    def is_created(self) -> bool:
        return True

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str) -> Any:
        # replacement: create the new one, then delete the old one (like CloudFormation)
        new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
        original_resource.delete(account_id, region_name)
        return new

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str) -> None:
        raise NotImplementedError("deleted through the resource's delete()")


def _stack_tags(kwargs: dict[str, Any], account_id: str, region: str) -> dict[str, str]:
    stack = _stack_by_id(account_id, region, kwargs.get("StackId", ""))
    tags = dict(stack.tags) if stack is not None else {}
    if stack is not None:
        tags.update({"aws:cloudformation:stack-name": stack.name, "aws:cloudformation:stack-id": stack.stack_id, "aws:cloudformation:logical-id": kwargs.get("LogicalId", "")})
    return tags


class CfnEksCluster(_Cfn, CloudFormationModel):
    __module__ = "moto.meshctl_testbed"  # moto's model registry keys models by moto.<service>
    ATTRS = ("Arn", "Endpoint", "CertificateAuthorityData", "OpenIdConnectIssuerUrl", "ClusterSecurityGroupId", "EncryptionConfigKeyArn", "Id", "KubernetesNetworkConfig.ServiceIpv6Cidr")

    def __init__(self, cluster: Any, account_id: str, region: str) -> None:
        self.cluster = cluster
        self.account_id = account_id
        self.region = region

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::EKS::Cluster"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @property
    def physical_resource_id(self) -> str:
        return self.cluster.name

    def get_cfn_attribute(self, attr: str) -> Any:
        c = self.cluster
        values = {
            "Arn": c.arn,
            "Endpoint": c.endpoint,
            "CertificateAuthorityData": c.certificate_authority["data"],
            "OpenIdConnectIssuerUrl": c.identity["oidc"]["issuer"],
            "ClusterSecurityGroupId": c.resources_vpc_config.get("clusterSecurityGroupId", ""),
            "EncryptionConfigKeyArn": "",
            "Id": "",
            "KubernetesNetworkConfig.ServiceIpv6Cidr": "",
        }
        if attr not in values:
            from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

            raise UnformattedGetAttTemplateException()
        return values[attr]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json["Properties"]
        backend = eks_backends[account_id][region_name]
        tags = {**_stack_tags(kwargs, account_id, region_name), **_tags_dict(props.get("Tags"))}
        cluster = backend.create_cluster(
            name=resource_name,
            role_arn=props["RoleArn"],
            resources_vpc_config=_camel(props.get("ResourcesVpcConfig") or {}),
            version=str(props["Version"]) if props.get("Version") is not None else None,
            kubernetes_network_config=_camel(props.get("KubernetesNetworkConfig")) or None,
            logging=_camel(props.get("Logging")) or None,
            tags=tags,
            encryption_config=_camel(props.get("EncryptionConfig")) or None,
            access_config=_camel(props.get("AccessConfig")) or None,
        )
        return cls(cluster, account_id, region_name)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str) -> Any:
        props = cloudformation_json["Properties"]
        c = original_resource.cluster
        if new_resource_name != c.name or props.get("RoleArn") != c.role_arn:
            return super().update_from_cloudformation_json(original_resource, new_resource_name, cloudformation_json, account_id, region_name)
        if props.get("Version") is not None:
            c.version = str(props["Version"])
        ac = _camel(props.get("AccessConfig") or {})
        if ac.get("authenticationMode"):
            c.access_config["authenticationMode"] = ac["authenticationMode"]
        vpc = _camel(props.get("ResourcesVpcConfig") or {})
        for k in ("endpointPublicAccess", "endpointPrivateAccess", "publicAccessCidrs"):
            if k in vpc:
                c.resources_vpc_config[k] = vpc[k]
        return original_resource

    def delete(self, account_id: str, region_name: str) -> None:
        backend = eks_backends[account_id][region_name]
        if self.cluster.name in backend.clusters:
            backend.delete_cluster(self.cluster.name)


class CfnEksNodegroup(_Cfn, CloudFormationModel):
    __module__ = "moto.meshctl_testbed"  # moto's model registry keys models by moto.<service>
    ATTRS = ("Arn", "ClusterName", "NodegroupName", "Id")

    def __init__(self, ng: Any) -> None:
        self.ng = ng

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::EKS::Nodegroup"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "NodegroupName"

    @property
    def physical_resource_id(self) -> str:
        return f"{self.ng.cluster_name}/{self.ng.nodegroup_name}"

    def get_cfn_attribute(self, attr: str) -> Any:
        return {"Arn": self.ng.arn, "ClusterName": self.ng.cluster_name, "NodegroupName": self.ng.nodegroup_name, "Id": self.physical_resource_id}[attr]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json["Properties"]
        backend = eks_backends[account_id][region_name]
        name = props.get("NodegroupName") or resource_name
        scaling = _camel(props.get("ScalingConfig")) or None
        if scaling:
            scaling = {k: int(v) for k, v in scaling.items()}
        lt = _camel(props.get("LaunchTemplate")) or None
        if lt and "version" in lt:
            lt["version"] = str(lt["version"])
        taints = _camel(props.get("Taints")) or None
        ng = backend.create_nodegroup(
            cluster_name=props["ClusterName"],
            node_role=props["NodeRole"],
            nodegroup_name=name,
            subnets=props["Subnets"],
            scaling_config=scaling,
            disk_size=int(props["DiskSize"]) if props.get("DiskSize") else None,
            instance_types=props.get("InstanceTypes"),
            ami_type=props.get("AmiType"),
            remote_access=_camel(props.get("RemoteAccess")) or None,
            labels=props.get("Labels"),
            taints=taints,
            tags={**_stack_tags(kwargs, account_id, region_name), **_tags_dict(props.get("Tags"))},
            launch_template=lt,
            capacity_type=props.get("CapacityType"),
            version=str(props["Version"]) if props.get("Version") else None,
            release_version=props.get("ReleaseVersion"),
        )
        return cls(ng)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str) -> Any:
        props = cloudformation_json["Properties"]
        ng = original_resource.ng
        replace = (props.get("NodegroupName") or new_resource_name) != ng.nodegroup_name or props["ClusterName"] != ng.cluster_name or props["NodeRole"] != ng.node_role
        replace = replace or sorted(props["Subnets"]) != sorted(ng.subnets) or (props.get("InstanceTypes") and props["InstanceTypes"] != ng.instance_types)
        if replace:
            return super().update_from_cloudformation_json(original_resource, new_resource_name, cloudformation_json, account_id, region_name)
        if props.get("ScalingConfig"):
            ng.scaling_config = {k: int(v) for k, v in _camel(props["ScalingConfig"]).items()}
        if "Labels" in props:
            ng.labels = props["Labels"] or {}
        if props.get("LaunchTemplate"):
            lt = _camel(props["LaunchTemplate"])
            ng.launch_template.update({k: str(v) for k, v in lt.items()})
        ng.modified_at = utcnow()
        return original_resource

    def delete(self, account_id: str, region_name: str) -> None:
        backend = eks_backends[account_id][region_name]
        c = backend.clusters.get(self.ng.cluster_name)
        if c is not None and self.ng.nodegroup_name in c.nodegroups:
            backend.delete_nodegroup(self.ng.cluster_name, self.ng.nodegroup_name)


class CfnEksAddon(_Cfn, CloudFormationModel):
    __module__ = "moto.meshctl_testbed"  # moto's model registry keys models by moto.<service>
    ATTRS = ("Arn",)

    def __init__(self, addon: dict[str, Any]) -> None:
        self.addon = addon

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::EKS::Addon"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @property
    def physical_resource_id(self) -> str:
        return f"{self.addon['clusterName']}|{self.addon['addonName']}"

    def get_cfn_attribute(self, attr: str) -> Any:
        return {"Arn": self.addon["addonArn"]}[attr]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json["Properties"]
        addon = create_addon(
            eks_backends[account_id][region_name],
            props["ClusterName"],
            props["AddonName"],
            props.get("AddonVersion"),
            props.get("ServiceAccountRoleArn"),
            props.get("ConfigurationValues"),
            _tags_dict(props.get("Tags")),
        )
        return cls(addon)

    def delete(self, account_id: str, region_name: str) -> None:
        backend = eks_backends[account_id][region_name]
        c = backend.clusters.get(self.addon["clusterName"])
        if c is not None and self.addon["addonName"] in c.addons:
            delete_addon(backend, self.addon["clusterName"], self.addon["addonName"])


class CfnEksAccessEntry(_Cfn, CloudFormationModel):
    __module__ = "moto.meshctl_testbed"  # moto's model registry keys models by moto.<service>
    ATTRS = ("AccessEntryArn",)

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::EKS::AccessEntry"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @property
    def physical_resource_id(self) -> str:
        return f"{self.entry['principalArn']}|{self.entry['clusterName']}"

    def get_cfn_attribute(self, attr: str) -> Any:
        return {"AccessEntryArn": self.entry["accessEntryArn"]}[attr]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json["Properties"]
        cluster = _cluster_or_404(eks_backends[account_id][region_name], props["ClusterName"])
        _api_mode_required(cluster)
        etype = props.get("Type") or "STANDARD"
        groups = props.get("KubernetesGroups") or []
        if etype == "STANDARD":
            _validate_groups_and_username(groups, props.get("Username"))
        if props["PrincipalArn"] in cluster.access_entries:
            raise EksInUse(clusterName=cluster.name, nodegroupName=None, addonName=None, message="The specified access entry resource is already in use on this cluster.")
        e = _new_access_entry(cluster, account_id, region_name, props["PrincipalArn"], groups, props.get("Username"), etype, _tags_dict(props.get("Tags")))
        for ap in props.get("AccessPolicies") or []:
            scope = _camel(ap.get("AccessScope") or {})
            e["associatedAccessPolicies"][ap["PolicyArn"]] = {
                "policyArn": ap["PolicyArn"],
                "accessScope": {"type": scope.get("type", "cluster"), "namespaces": scope.get("namespaces", [])},
                "associatedAt": utcnow(),
                "modifiedAt": utcnow(),
            }
        return cls(e)

    def delete(self, account_id: str, region_name: str) -> None:
        c = eks_backends[account_id][region_name].clusters.get(self.entry["clusterName"])
        if c is not None:
            c.access_entries.pop(self.entry["principalArn"], None)


class CfnEksPodIdentityAssociation(_Cfn, CloudFormationModel):
    __module__ = "moto.meshctl_testbed"  # moto's model registry keys models by moto.<service>
    ATTRS = ("AssociationArn", "AssociationId")

    def __init__(self, assoc: dict[str, Any]) -> None:
        self.assoc = assoc

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::EKS::PodIdentityAssociation"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @property
    def physical_resource_id(self) -> str:
        return self.assoc["associationArn"]

    def get_cfn_attribute(self, attr: str) -> Any:
        return {"AssociationArn": self.assoc["associationArn"], "AssociationId": self.assoc["associationId"]}[attr]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json["Properties"]
        assoc = create_pod_identity_association(
            eks_backends[account_id][region_name], props["ClusterName"], props["Namespace"], props["ServiceAccount"], props["RoleArn"], _tags_dict(props.get("Tags"))
        )
        return cls(assoc)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str) -> Any:
        props = cloudformation_json["Properties"]
        a = original_resource.assoc
        if (props["ClusterName"], props["Namespace"], props["ServiceAccount"]) != (a["clusterName"], a["namespace"], a["serviceAccount"]):
            original_resource.delete(account_id, region_name)
            return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
        a["roleArn"] = props["RoleArn"]
        a["modifiedAt"] = utcnow()
        return original_resource

    def delete(self, account_id: str, region_name: str) -> None:
        c = eks_backends[account_id][region_name].clusters.get(self.assoc["clusterName"])
        if c is not None:
            _associations(c).pop(self.assoc["associationId"], None)


class CfnRamResourceShare(_Cfn, CloudFormationModel):
    __module__ = "moto.meshctl_testbed"  # moto's model registry keys models by moto.<service>
    ATTRS = ("Arn", "Status", "CreationTime", "LastUpdatedTime", "FeatureSet", "OwningAccountId")

    def __init__(self, share: Any) -> None:
        self.share = share

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::RAM::ResourceShare"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @property
    def physical_resource_id(self) -> str:
        return self.share.arn

    def get_cfn_attribute(self, attr: str) -> Any:
        d = self.share.describe()
        return {
            "Arn": self.share.arn,
            "Status": self.share.status,
            "CreationTime": str(d["creationTime"]),
            "LastUpdatedTime": str(d["lastUpdatedTime"]),
            "FeatureSet": self.share.feature_set,
            "OwningAccountId": self.share.owning_account_id,
        }[attr]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json["Properties"]
        tags = {**_stack_tags(kwargs, account_id, region_name), **_tags_dict(props.get("Tags"))}
        share = ram_create_resource_share(
            ram_backends[account_id][region_name],
            props["Name"],
            props.get("ResourceArns") or [],
            [p for p in props.get("Principals") or [] if p],
            _bool(props.get("AllowExternalPrincipals"), True),
            tags,
        )
        return cls(share)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str) -> Any:
        props = cloudformation_json["Properties"]
        share = original_resource.share
        share.name = props["Name"]
        share.allow_external_principals = _bool(props.get("AllowExternalPrincipals"), True)
        backend = ram_backends[account_id][region_name]
        want_p = [p for p in props.get("Principals") or [] if p]
        pending: list[dict[str, Any]] = []
        for p in want_p:
            if p not in share.principals:
                share.principals.append(p)
                _add_principal(share, p, pending)
        for p in list(share.principals):
            if p not in want_p:
                share.principals.remove(p)
                _share_state(share)[p] = "DISASSOCIATED"
        _backend_invitations(backend).extend(pending)
        want_r = props.get("ResourceArns") or []
        share.resource_arns = [r for r in share.resource_arns if r in want_r]
        share.add_resources([r for r in want_r if r not in share.resource_arns])
        share.last_updated_time = utcnow()
        return original_resource

    def delete(self, account_id: str, region_name: str) -> None:
        if self.share.status != "DELETED":
            ram_delete_resource_share(ram_backends[account_id][region_name], self.share.arn)


class CfnTransitGatewayAttachment(_Cfn, CloudFormationModel):
    __module__ = "moto.meshctl_testbed"  # moto's model registry keys models by moto.<service>
    ATTRS = ("Id",)

    def __init__(self, att: Any) -> None:
        self.att = att

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::EC2::TransitGatewayAttachment"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @property
    def physical_resource_id(self) -> str:
        return self.att.id

    def get_cfn_attribute(self, attr: str) -> Any:
        return {"Id": self.att.id}[attr]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
        props = cloudformation_json["Properties"]
        backend = ec2_backends[account_id][region_name]
        options = _camel(props.get("Options")) or None
        if options:
            options = {k[:1].upper() + k[1:]: v for k, v in options.items()}
        att = backend.create_transit_gateway_vpc_attachment(
            transit_gateway_id=props["TransitGatewayId"],
            vpc_id=props["VpcId"],
            subnet_ids=list(props["SubnetIds"]),
            tags={**_stack_tags(kwargs, account_id, region_name), **_tags_dict(props.get("Tags"))},
            options=options,
        )
        return cls(att)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str) -> Any:
        props = cloudformation_json["Properties"]
        att = original_resource.att
        if props["TransitGatewayId"] != att.transit_gateway_id or props["VpcId"] != att.vpc_id:
            # replacement: the old attachment must go first (one per VPC and TGW)
            original_resource.delete(account_id, region_name)
            return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
        att.subnet_ids = list(props["SubnetIds"])
        for k, v in _tags_dict(props.get("Tags")).items():
            att.add_tag(k, v)
        return original_resource

    def delete(self, account_id: str, region_name: str) -> None:
        backend = ec2_backends[account_id][region_name]
        if self.att.id in backend.transit_gateway_attachments:
            backend.delete_transit_gateway_vpc_attachment(self.att.id)


for _f in (cfn_parsing.get_model_list, cfn_parsing.get_model_map, cfn_parsing.get_name_type_map):
    _f.cache_clear()


# --- Fn::GetAZs (moto answers us-east-1a..d for "" whatever the stack's region) and Fn::Cidr

_orig_clean_json = cfn_parsing.clean_json


def clean_json(resource_json: Any, resources_map: Any) -> Any:
    if isinstance(resource_json, dict) and "Fn::GetAZs" in resource_json and len(resource_json) == 1:
        region = resource_json["Fn::GetAZs"]
        if isinstance(region, dict):
            region = _orig_clean_json(region, resources_map)
        region = region or resources_map._region_name
        zones = ec2_backends[resources_map._account_id][region].describe_availability_zones()
        return sorted(z.name for z in zones)
    if isinstance(resource_json, dict) and "Fn::Cidr" in resource_json and len(resource_json) == 1:
        # moto 5.2.5 has no Fn::Cidr: [ipBlock, count, cidrBits] -> the first `count` subnets with
        # `cidrBits` host bits
        import ipaddress

        block, count, bits = (_orig_clean_json(v, resources_map) for v in resource_json["Fn::Cidr"])
        net = ipaddress.ip_network(str(block), strict=False)
        subnets = net.subnets(new_prefix=net.max_prefixlen - int(bits))
        return [str(n) for _i, n in zip(range(int(count)), subnets)]
    return _orig_clean_json(resource_json, resources_map)


cfn_parsing.clean_json = clean_json


# --- delete handlers for types moto creates but does not delete


def _del_route(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    rt = ec2.route_tables.get(res.route_table.id)
    if rt is not None and res.id in rt._routes:
        del rt._routes[res.id]


def _del_route_table(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    if res.id in ec2.route_tables:
        ec2.delete_route_table(res.id)


def _del_subnet_association(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    rt = ec2.route_tables.get(res.route_table_id)
    if rt is None:
        return
    for assoc_id, subnet in list(rt._associations.items()):
        if subnet == res.subnet_id:
            ec2.disassociate_route_table(assoc_id)


def _del_nat_gateway(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    nat = ec2.nat_gateways.get(res.id)
    if nat is not None and nat.state != "deleted":
        ec2.delete_nat_gateway(res.id)


def _del_eip(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    if res in ec2.addresses:
        if res.eni is not None or res.instance is not None:
            raise EC2ClientError("InvalidIPAddress.InUse", f"Address {res.public_ip} is in use.")
        ec2.release_address(allocation_id=res.allocation_id) if res.allocation_id else ec2.release_address(address=res.public_ip)


def _del_gateway_attachment(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    if not res.gateway_id or not res.gateway_id.startswith("igw-"):
        ec2.detach_vpn_gateway(res.gateway_id, res.vpc_id)
        return
    # AWS: DependencyViolation while public addresses are mapped in the VPC
    for eip in ec2.addresses:
        if eip.eni is not None and getattr(eip.eni.subnet, "vpc_id", None) == res.vpc_id:
            raise DependencyViolationError(f"Network {res.vpc_id} has some mapped public address(es). Please unmap those public address(es) before detaching the gateway.")
    igw = ec2.internet_gateways.get(res.gateway_id)
    if igw is not None and igw.vpc is not None and igw.vpc.id == res.vpc_id:
        ec2.detach_internet_gateway(res.gateway_id, res.vpc_id)


def _del_internet_gateway(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    if res.id in ec2.internet_gateways:
        ec2.delete_internet_gateway(res.id)


def _del_ingress(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    p = res.properties
    sg = ec2.get_security_group_from_id(res.security_group.id)
    if sg is None:
        return
    source = {}
    if p.get("SourceSecurityGroupId"):
        source["GroupId"] = p["SourceSecurityGroupId"]
    if p.get("SourceSecurityGroupName"):
        source["GroupName"] = p["SourceSecurityGroupName"]
    ip_ranges = [{"CidrIp": p["CidrIp"], "Description": p.get("Description")}] if p.get("CidrIp") else []
    try:
        ec2.revoke_security_group_ingress(
            group_name_or_id=sg.id,
            ip_protocol=p.get("IpProtocol"),
            from_port=p.get("FromPort"),
            to_port=p.get("ToPort"),
            ip_ranges=ip_ranges,
            source_groups=[source] if source else [],
        )
    except Exception as e:  # noqa: BLE001 - the rule is gone already: done
        if "InvalidPermission.NotFound" not in _error_code(e):
            raise


def _del_transit_gateway(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    if res.id in ec2.transit_gateways:
        ec2.delete_transit_gateway(res.id)


def _del_iam_role(res: Any, account: str, region: str) -> None:
    from moto.iam.models import iam_backends

    iam = iam_backends[account]["aws"]
    try:
        role = iam.get_role(res.name)
    except Exception:  # noqa: BLE001 - gone already
        return
    # CloudFormation detaches the managed policies it attached and drops the inline ones
    for arn in list(role.managed_policies):
        iam.detach_role_policy(arn, res.name)
    for name in list(role.policies):
        iam.delete_role_policy(res.name, name)
    for profile in list(iam.instance_profiles.values()):
        if any(r.name == res.name for r in profile.roles):
            profile.delete_role(res.name)
    iam.delete_role(res.name)


# --- AWS::IAM::Role: moto ignores ManagedPolicyArns
from moto.iam.models import Role as IamRole  # noqa: E402

_orig_role_create = IamRole.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]


def _role_create(cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any) -> Any:
    from moto.iam.models import iam_backends

    role = _orig_role_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    iam = iam_backends[account_id]["aws"]
    for arn in cloudformation_json["Properties"].get("ManagedPolicyArns") or []:
        iam.attach_role_policy(arn, role.name)
    return role


IamRole.create_from_cloudformation_json = classmethod(_role_create)  # type: ignore[method-assign, assignment]


def _del_launch_template(res: Any, account: str, region: str) -> None:
    ec2 = ec2_backends[account][region]
    if res.id in ec2.launch_templates:
        ec2.delete_launch_template(None, res.id)


DELETE_HANDLERS = {
    "AWS::EC2::Route": _del_route,
    "AWS::EC2::RouteTable": _del_route_table,
    "AWS::EC2::SubnetRouteTableAssociation": _del_subnet_association,
    "AWS::EC2::NatGateway": _del_nat_gateway,
    "AWS::EC2::EIP": _del_eip,
    "AWS::EC2::VPCGatewayAttachment": _del_gateway_attachment,
    "AWS::EC2::InternetGateway": _del_internet_gateway,
    "AWS::EC2::SecurityGroupIngress": _del_ingress,
    "AWS::EC2::TransitGateway": _del_transit_gateway,
    "AWS::EC2::LaunchTemplate": _del_launch_template,
    "AWS::IAM::Role": _del_iam_role,
}

_orig_delete_resource = ResourceMap._delete_resource


def _delete_resource(self: Any, parsed_resource: Any, resource_json: dict[str, Any]) -> None:
    rtype = resource_json.get("Type")
    if rtype in DELETE_HANDLERS:
        DELETE_HANDLERS[rtype](parsed_resource, self._account_id, self._region_name)
    elif isinstance(parsed_resource, _Cfn):
        parsed_resource.delete(self._account_id, self._region_name)
    else:
        _orig_delete_resource(self, parsed_resource, resource_json)


ResourceMap._delete_resource = _delete_resource  # type: ignore[method-assign]


# --- dependency order


def _collect_refs(node: Any, names: set[str], out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Ref" and isinstance(v, str):
                if v in names:
                    out.add(v)
            elif k == "Fn::GetAtt":
                target = v[0] if isinstance(v, list) else str(v).split(".")[0]
                if target in names:
                    out.add(target)
            elif k == "Fn::Sub":
                text = v[0] if isinstance(v, list) else v
                if isinstance(text, str):
                    for ref in re.findall(r"\$\{([^!}][^}]*)\}", text):
                        if ref.split(".")[0] in names:
                            out.add(ref.split(".")[0])
                if isinstance(v, list) and len(v) > 1:
                    _collect_refs(v[1], names, out)
            else:
                _collect_refs(v, names, out)
    elif isinstance(node, list):
        for x in node:
            _collect_refs(x, names, out)


def dependencies(resources: dict[str, Any]) -> dict[str, set[str]]:
    names = set(resources)
    deps: dict[str, set[str]] = {}
    for name, res in resources.items():
        d: set[str] = set()
        dep = res.get("DependsOn") or []
        d |= set([dep] if isinstance(dep, str) else dep) & names
        _collect_refs(res.get("Properties") or {}, names, d)
        d.discard(name)
        deps[name] = d
    return deps


class StackDeleteFailed(Exception):
    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = failed
        super().__init__(f"The following resource(s) failed to delete: [{', '.join(sorted(failed))}]. ")


def delete_resources(resource_map: Any, stack: Any) -> dict[str, str]:
    """Deletes the stack's resources, dependents first, like CloudFormation. Returns the ones
    that could not be deleted (logical id -> reason); what they depend on is kept too."""
    json_map = resource_map._resource_json_map or {}
    parsed = resource_map._parsed_resources
    deps = dependencies(json_map)
    alive = {lid for lid in json_map if lid in parsed and parsed[lid] is not None and not isinstance(parsed[lid], (str, int, float, list, dict))}
    failed: dict[str, str] = {}
    progress = True
    while progress:
        progress = False
        for lid in sorted(alive):
            if lid in failed or any(lid in deps.get(o, ()) for o in alive if o != lid):
                continue
            res = parsed[lid]
            rjson = json_map[lid]
            rtype = rjson.get("Type", "")
            physical = str(getattr(res, "physical_resource_id", "") or "")
            if rjson.get("DeletionPolicy") == "Retain":
                _resource_event(stack, lid, rtype, physical, "DELETE_SKIPPED")
            else:
                _resource_event(stack, lid, rtype, physical, "DELETE_IN_PROGRESS")
                try:
                    resource_map._delete_resource(res, rjson)
                except Exception as e:  # noqa: BLE001 - reported as the resource's DELETE_FAILED
                    reason = f"{_error_code(e)}: {_error_text(e)}"
                    failed[lid] = reason
                    _resource_event(stack, lid, rtype, physical, "DELETE_FAILED", reason)
                    continue
                _resource_event(stack, lid, rtype, physical, "DELETE_COMPLETE")
            parsed.pop(lid, None)
            alive.discard(lid)
            progress = True
    for lid in alive - set(failed):
        failed.setdefault(lid, "not deleted: a resource depending on it could not be deleted")
    return {k: v for k, v in failed.items() if k in alive}


def _resource_map_delete(self: Any) -> None:
    stack = _stack_by_id(self._account_id, self._region_name, self.stack_id)
    failed = delete_resources(self, stack)
    if failed:
        raise StackDeleteFailed(failed)


ResourceMap.delete = _resource_map_delete  # type: ignore[method-assign]

# --- no lazy re-creation: moto's ResourceMap creates a resource on first access, so reading the
# Outputs or the resources of a stack that rolled back or was (partly) deleted created them
# again. Resources are created only while a create/update runs; Outputs are answered like AWS.

_orig_rm_getitem = ResourceMap.__getitem__


def _rm_getitem(self: Any, key: str) -> Any:
    if key in self._parsed_resources or getattr(self, "meshctl_live", True):
        return _orig_rm_getitem(self, key)
    if key in (self._resource_json_map or {}):
        return None  # rolled back, deleted or never created
    raise KeyError(key)


ResourceMap.__getitem__ = _rm_getitem  # type: ignore[method-assign]


def _live_resources(rm: Any) -> list[Any]:
    json_map = rm._resource_json_map or {}
    return [v for k, v in rm._parsed_resources.items() if k in json_map and v is not None and not isinstance(v, (str, int, float, list, dict))]


Stack.stack_resources = property(lambda self: _live_resources(self.resource_map))  # type: ignore[assignment]

_orig_stack_outputs = Stack.outputs


def _stack_outputs(self: Any) -> Any:
    if self.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"):
        return _orig_stack_outputs.fget(self)
    if self.status in ("DELETE_IN_PROGRESS", "DELETE_FAILED", "DELETE_COMPLETE", "UPDATE_ROLLBACK_FAILED"):
        # the Outputs of the last successful operation (computed before the deletion started)
        cached = [o for o in self.output_map._parsed_outputs.values() if o]
        return [{"OutputKey": o.key, "OutputValue": o.value, "Description": o.description} for o in cached] or None
    return None  # REVIEW_IN_PROGRESS, ROLLBACK_*, CREATE_IN_PROGRESS: none


Stack.outputs = property(_stack_outputs)  # type: ignore[assignment]

_orig_stack_update = Stack.update


def _stack_update(self: Any, *args: Any, **kwargs: Any) -> None:
    self.resource_map.meshctl_live = True
    try:
        _orig_stack_update(self, *args, **kwargs)
    finally:
        self.resource_map.meshctl_live = False


Stack.update = _stack_update  # type: ignore[method-assign]


# --- creation: per-resource events, and rollback on failure

_orig_parse_and_create_resource = cfn_parsing.parse_and_create_resource


def parse_and_create_resource(logical_id: str, resource_json: dict[str, Any], resources_map: Any, account_id: str, region_name: str) -> Any:
    stack = _stack_by_id(account_id, region_name, resources_map.stack_id)
    rtype = resource_json.get("Type", "")
    _resource_event(stack, logical_id, rtype, "", "CREATE_IN_PROGRESS")
    try:
        res = _orig_parse_and_create_resource(logical_id, resource_json, resources_map, account_id, region_name)
    except Exception as e:
        if not hasattr(e, "meshctl_logical_id"):
            e.meshctl_logical_id = logical_id  # type: ignore[attr-defined]
            reason = f'Resource handler returned message: "{_error_text(e)}" (HandlerErrorCode: {_error_code(e)})'
            _resource_event(stack, logical_id, rtype, "", "CREATE_FAILED", reason)
        raise
    if res is not None:
        _resource_event(stack, logical_id, rtype, str(getattr(res, "physical_resource_id", "") or ""), "CREATE_COMPLETE")
    return res


cfn_parsing.parse_and_create_resource = parse_and_create_resource


def stack_create_resources(self: Any) -> None:
    self.status = "CREATE_IN_PROGRESS"
    self.resource_map.meshctl_live = True
    try:
        ready = self.resource_map.create(self.template_dict)
    except Exception as e:  # noqa: BLE001 - CloudFormation rolls back instead of answering an error
        self.resource_map.meshctl_live = False
        lid = getattr(e, "meshctl_logical_id", None)
        reason = f"The following resource(s) failed to create: [{lid}]. Rollback requested by user." if lid else f"{_error_code(e)}: {_error_text(e)}"
        self.status = "ROLLBACK_IN_PROGRESS"
        self.status_reason = reason
        self._add_stack_event("ROLLBACK_IN_PROGRESS", resource_status_reason=reason)
        failed = delete_resources(self.resource_map, self)
        if failed:
            self.status = "ROLLBACK_FAILED"
            self.status_reason = f"The following resource(s) failed to delete: [{', '.join(sorted(failed))}]. "
            self._add_stack_event("ROLLBACK_FAILED", resource_status_reason=self.status_reason)
        else:
            self.status = "ROLLBACK_COMPLETE"
            self._add_stack_event("ROLLBACK_COMPLETE")
        return
    self.description = self.template_dict.get("Description")
    if ready:
        self.mark_creation_complete()
        _orig_stack_outputs.fget(self)  # resolve the Outputs now, while every resource exists
    self.resource_map.meshctl_live = False


Stack.create_resources = stack_create_resources  # type: ignore[method-assign]


@property  # type: ignore[misc]
def stack_parameter_list(self: Any) -> list[dict[str, Any]]:
    # AWS echoes parameters as given (a CommaDelimitedList stays "a,b,c")
    given = self.resource_map.input_parameters or {}
    out = []
    for k, v in self.resource_map.resolved_parameters.items():
        if k in self.resource_map.no_echo_parameter_keys:
            value = "****"
        elif k in given:
            value = given[k]
        elif isinstance(v, list):
            value = ",".join(str(x) for x in v)
        else:
            value = v if isinstance(v, str) else str(v)
        out.append({"ParameterKey": k, "ParameterValue": value})
    return out


Stack.parameter_list = stack_parameter_list  # type: ignore[assignment]


def _find_change_set(backend: Any, change_set_name: str, stack_name: str | None) -> Any:
    if change_set_name in backend.change_sets:
        return backend.change_sets[change_set_name]
    for cs in backend.change_sets.values():
        if cs.change_set_name == change_set_name and (not stack_name or stack_name in (cs.stack_name, cs.stack_id)):
            return cs
    raise CfnValidationError(change_set_name, message=f"ChangeSet [{change_set_name}] does not exist")


def execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
    cs = _find_change_set(self, change_set_name, stack_name)
    if cs.execution_status != "AVAILABLE":
        raise ModelError("InvalidChangeSetStatus", f"ChangeSet [{cs.change_set_id}] cannot be executed in its current status of [{cs.execution_status}]")
    stack = self.stacks[cs.stack_id]
    if cs.change_set_type == "CREATE":
        # CloudFormation creates the stack exactly as CreateStack would: template, parameters,
        # tags on the resources, Outputs, exports, rollback on failure.
        stack.template = cs.template
        stack._parse_template()
        stack.description = stack.template_dict.get("Description")
        stack.parameters = cs.parameters
        stack.cross_stack_resources = self.exports
        stack.resource_map = stack._create_resource_map()
        stack.output_map = stack._create_output_map()
        stack._add_stack_event("CREATE_IN_PROGRESS", resource_status_reason="User Initiated")
        stack.create_resources()
        if stack.status == "CREATE_COMPLETE":
            self._validate_export_uniqueness(stack)
            for export in stack.exports:
                self.exports[export.name] = export
    else:
        stack._add_stack_event("UPDATE_IN_PROGRESS", resource_status_reason="User Initiated")
        stack.status = "UPDATE_IN_PROGRESS"
        stack.resource_map.meshctl_live = True
        try:
            cs.apply()
        except Exception as e:  # noqa: BLE001 - not rolled back: say so
            stack.resource_map.meshctl_live = False
            stack.status = "UPDATE_ROLLBACK_FAILED"
            stack.status_reason = f"{_error_code(e)}: {_error_text(e)} (the emulator does not roll updates back)"
            stack._add_stack_event("UPDATE_ROLLBACK_FAILED", resource_status_reason=stack.status_reason)
            cs.execution_status = "EXECUTE_FAILED"
            return
        stack.template = cs.template
        stack._parse_template()
        stack.description = stack.template_dict.get("Description")
        if cs.parameters:
            stack.parameters = cs.parameters
        if cs.tags is not None:
            stack.tags = cs.tags
        stack.output_map = stack._create_output_map()
        for export in stack.exports:
            self.exports[export.name] = export
        stack.status = "UPDATE_COMPLETE"
        _orig_stack_outputs.fget(stack)
        stack.resource_map.meshctl_live = False
        stack.status_reason = None
        stack._add_stack_event("UPDATE_COMPLETE")
    cs.execution_status = "EXECUTE_COMPLETE"
    cs.status = "CREATE_COMPLETE"


CloudFormationBackend.execute_change_set = execute_change_set  # type: ignore[method-assign]


def delete_stack(self: Any, name_or_stack_id: str) -> None:
    stack = self.stacks.get(name_or_stack_id) or next((s for s in self.stacks.values() if s.name == name_or_stack_id), None)
    if stack is None:
        return  # AWS: deleting a stack that does not exist succeeds
    if stack.status in ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"):
        _orig_stack_outputs.fget(stack)  # keep the Outputs of the stack being deleted
    stack._add_stack_event("DELETE_IN_PROGRESS", resource_status_reason="User Initiated")
    stack.status = "DELETE_IN_PROGRESS"
    stack.resource_map.meshctl_live = False
    failed = delete_resources(stack.resource_map, stack)
    if failed:
        # AWS keeps the stack, DELETE_FAILED, naming the resources (their events say why)
        stack.status = "DELETE_FAILED"
        stack.status_reason = f"The following resource(s) failed to delete: [{', '.join(sorted(failed))}]. "
        stack._add_stack_event("DELETE_FAILED", resource_status_reason=stack.status_reason)
        return
    stack._add_stack_event("DELETE_COMPLETE")
    stack.status = "DELETE_COMPLETE"
    stack.status_reason = None
    self.stacks.pop(stack.stack_id, None)
    self.deleted_stacks[stack.stack_id] = stack
    for export in stack.exports:
        self.exports.pop(export.name, None)
    for cs_id in [k for k, cs in self.change_sets.items() if cs.stack_id == stack.stack_id]:
        del self.change_sets[cs_id]


CloudFormationBackend.delete_stack = delete_stack  # type: ignore[method-assign]

# moto's ChangeSet.apply -> ResourceMap.update gives a resource without an update handler the
# value None: replace it instead (create the new, delete the old), as CloudFormation does.
_orig_parse_and_update_resource = cfn_parsing.parse_and_update_resource


def parse_and_update_resource(logical_id: str, resource_json: dict[str, Any], resources_map: Any, account_id: str, region_name: str) -> Any:
    rclass = cfn_parsing.resource_class_from_type(resource_json["Type"])
    if rclass is None:
        return None
    if hasattr(rclass.update_from_cloudformation_json, "__isabstractmethod__"):
        old = resources_map._parsed_resources.get(logical_id)
        old_json = resources_map._resource_json_map.get(logical_id) or resource_json
        new = parse_and_create_resource(logical_id, resource_json, resources_map, account_id, region_name)
        if old is not None:
            try:
                resources_map._delete_resource(old, old_json)
            except Exception:  # noqa: BLE001 - CloudFormation would report a cleanup failure and go on
                pass
        return new
    return _orig_parse_and_update_resource(logical_id, resource_json, resources_map, account_id, region_name)


cfn_parsing.parse_and_update_resource = parse_and_update_resource

# ============================================================================ EKS authentication
# The token authentication webhook of every test-bed API server (kube-apiserver
# --authentication-token-webhook-config-file, version v1): POST /_testbed/eks-authn/<cluster>
# with a TokenReview. It stands in for the EKS authenticator (aws-iam-authenticator + access
# entries) and for STS: a `k8s-aws-v1.` token of the test bed's aws stand-in
# (tests/standin/src/bin/aws.rs) names the cluster, the role to assume and the pod's
# service-account token, which stands in for the pod's EKS Pod Identity credentials. The chain
# is decided by what meshctl wrote to moto and to the clusters, step by step as AWS would:
#   a. the pod token: a TokenReview at the hub API server -> system:serviceaccount:<ns>:<sa>
#   b. the EKS Pod Identity association of <ns>/<sa> in the hub account (the cluster holding it
#      has the eks-pod-identity-agent add-on; role A trusts pods.eks.amazonaws.com)
#   c. A's policies (inline and attached) allow sts:AssumeRole (+ sts:TagSession: Pod Identity's
#      session tags are transitive) on R, and R's trust policy allows A
#   d. the EKS cluster named in the token exists in the account whose API server called
#   e. R is mapped as EKS maps it: access entries when the cluster's authentication mode has API
#      (AmazonEKSClusterAdminPolicy at cluster scope -> group system:masters), else
#      kube-system/aws-auth mapRoles of the calling API server ({{AccountID}}, {{SessionName}})
# Any failed step answers authenticated: false with the reason in status.error (the API server
# logs it; a TokenReview made through the API server returns it). Configuration: the JSON file
# named by MESHCTL_TESTBED_EKS_AUTHN (scripts/testbed up writes it): region, hub, CA file and
# per cluster its account, API server URL and admin token. See tests/README.md.

import os  # noqa: E402
import ssl  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402

from moto.iam.models import iam_backends  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication  # noqa: E402

EKS_AUTHN_PATH = "/_testbed/eks-authn/"
EKS_TOKEN_PREFIX = "k8s-aws-v1."
EKS_TOKEN_MAX_AGE = 15 * 60  # the authenticator accepts a presigned URL for 15 minutes
POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
POD_IDENTITY_AGENT = "eks-pod-identity-agent"


class AuthnRefused(Exception):
    """A step of the chain failed: the message is the TokenReview's status.error."""


class PolicyNotUnderstood(Exception):
    """A policy shape the test bed's evaluator does not implement: refused rather than guessed."""


def _authn_config() -> dict[str, Any]:
    path = os.environ.get("MESHCTL_TESTBED_EKS_AUTHN")
    if not path:
        raise AuthnRefused("the test bed's EKS authentication is not configured (MESHCTL_TESTBED_EKS_AUTHN is not set)")
    with open(path) as f:
        return json.load(f)


def _kube(conf: dict[str, Any], cluster: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A request to a test-bed API server with its admin token; (HTTP status, JSON body)."""
    c = conf["clusters"][cluster]
    req = urllib.request.Request(
        c["server"] + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {c['token']}", "Content-Type": "application/json", "Accept": "application/json"},
    )
    ctx = ssl.create_default_context(cafile=conf["ca"])
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except OSError as e:
        raise AuthnRefused(f"API server of {cluster} ({c['server']}) unreachable: {e}") from e


def _decode_eks_token(token: str) -> dict[str, Any]:
    if not token.startswith(EKS_TOKEN_PREFIX):
        raise AuthnRefused("not an EKS token (no k8s-aws-v1. prefix)")
    b = token[len(EKS_TOKEN_PREFIX):]
    try:
        t = json.loads(base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)))
    except (ValueError, TypeError) as e:
        raise AuthnRefused(
            "a k8s-aws-v1. token that is not the test bed's (base64url JSON of the aws stand-in): "
            "a SigV4-presigned STS URL cannot be verified here (no STS)"
        ) from e
    want = {"cluster": str, "region": str, "session_name": str, "issued_at": int, "pod_token": str}
    if not isinstance(t, dict) or any(not isinstance(t.get(k), ty) for k, ty in want.items()) or not isinstance(t.get("role_arn"), (str, type(None))):
        raise AuthnRefused(f"malformed test-bed EKS token: want the fields {sorted([*want, 'role_arn'])}")
    age = time.time() - t["issued_at"]
    if age > EKS_TOKEN_MAX_AGE:
        raise AuthnRefused(f"token expired: issued {int(age)}s ago (EKS accepts 15 minutes)")
    if age < -60:
        raise AuthnRefused("token issued in the future")
    return t


# --- IAM policies: a small evaluator for exactly the shapes EKS + Pod Identity need here


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcards: * any run of characters, ? one character."""
    rx = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE if ignore_case else 0) is not None


def _arn_like(pattern: str, arn: str) -> bool:
    """ArnEquals / ArnLike: the six colon-separated parts compared one by one, wildcards allowed."""
    p, a = pattern.split(":", 5), arn.split(":", 5)
    return len(p) == 6 and len(a) == 6 and all(_glob(x, y) for x, y in zip(p, a))


_CONDITION_OPERATORS = {
    "StringEquals": lambda want, have: want == have,
    "StringLike": lambda want, have: _glob(want, have),
    "ArnEquals": _arn_like,
    "ArnLike": _arn_like,
}


def _statements(doc: Any, label: str) -> list[dict[str, Any]]:
    if isinstance(doc, str):
        text = doc if doc.lstrip().startswith("{") else urllib.parse.unquote(doc)
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise PolicyNotUnderstood(f"{label}: not JSON") from e
    if not isinstance(doc, dict):
        raise PolicyNotUnderstood(f"{label}: not a policy document")
    st = doc.get("Statement")
    st = [st] if isinstance(st, dict) else st
    if not isinstance(st, list) or not all(isinstance(x, dict) for x in st):
        raise PolicyNotUnderstood(f"{label}: Statement is neither an object nor a list of objects")
    return st


def _effect(stmt: dict[str, Any], where: str) -> str:
    e = stmt.get("Effect")
    if e not in ("Allow", "Deny"):
        raise PolicyNotUnderstood(f"{where}: Effect {e!r}")
    return e


def _action_matches(stmt: dict[str, Any], action: str, where: str) -> bool:
    if "NotAction" in stmt:
        raise PolicyNotUnderstood(f"{where}: NotAction")
    if "Action" not in stmt:
        raise PolicyNotUnderstood(f"{where}: no Action")
    return any(isinstance(a, str) and _glob(a, action, ignore_case=True) for a in _as_list(stmt["Action"]))


def _conditions_hold(cond: Any, context: dict[str, str], where: str) -> bool:
    if cond is None:
        return True
    if not isinstance(cond, dict):
        raise PolicyNotUnderstood(f"{where}: Condition is not an object")
    keys = {k.lower(): v for k, v in context.items()}
    for op, block in cond.items():
        fn = _CONDITION_OPERATORS.get(op)
        if fn is None or not isinstance(block, dict):
            raise PolicyNotUnderstood(f"{where}: condition operator {op} (understood: {', '.join(_CONDITION_OPERATORS)})")
        for key, values in block.items():
            if key.lower() not in keys:
                raise PolicyNotUnderstood(f"{where}: condition key {key} (understood here: {', '.join(context) or 'none'})")
            if not any(isinstance(v, str) and fn(v, keys[key.lower()]) for v in _as_list(values)):
                return False
    return True


def identity_policy_allows(docs: list[tuple[str, Any]], action: str, resource: str) -> bool:
    """Whether identity policies (label, document) allow `action` on `resource` (no explicit Deny)."""
    allowed = False
    for label, doc in docs:
        for i, stmt in enumerate(_statements(doc, label)):
            where = f"{label}, statement {i + 1}"
            if not _action_matches(stmt, action, where):
                continue
            extra = set(stmt) - {"Sid", "Effect", "Action", "Resource"}
            if extra:
                raise PolicyNotUnderstood(f"{where}: {', '.join(sorted(extra))}")
            if "Resource" not in stmt:
                raise PolicyNotUnderstood(f"{where}: no Resource")
            if not any(isinstance(r, str) and _glob(r, resource) for r in _as_list(stmt["Resource"])):
                continue
            if _effect(stmt, where) == "Deny":
                return False
            allowed = True
    return allowed


def trust_policy_allows(doc: Any, label: str, action: str, principal: Any, context: dict[str, str]) -> bool:
    """Whether a role's trust policy allows `action` to the caller. `principal(P)` says whether a
    statement's Principal element names the caller; `context` holds the condition keys known."""
    allowed = False
    for i, stmt in enumerate(_statements(doc, label)):
        where = f"{label}, statement {i + 1}"
        if not _action_matches(stmt, action, where):
            continue
        extra = set(stmt) - {"Sid", "Effect", "Action", "Principal", "Condition"}
        if extra:
            raise PolicyNotUnderstood(f"{where}: {', '.join(sorted(extra))}")
        if "Principal" not in stmt or not principal(stmt["Principal"], where):
            continue
        if not _conditions_hold(stmt.get("Condition"), context, where):
            continue
        if _effect(stmt, where) == "Deny":
            return False
        allowed = True
    return allowed


def _principal_is_role(role_arn: str, account: str) -> Any:
    """Principal matcher for a role session of `role_arn`: the role itself, its account (root,
    or the bare id), or "*"."""

    def match(p: Any, where: str) -> bool:
        if p == "*":
            return True
        if not isinstance(p, dict) or set(p) - {"AWS", "Service", "Federated", "CanonicalUser"}:
            raise PolicyNotUnderstood(f"{where}: Principal {p!r}")
        for a in _as_list(p.get("AWS", [])):
            if a in ("*", role_arn, account) or (isinstance(a, str) and re.fullmatch(rf"arn:aws[\w-]*:iam::{account}:root", a)):
                return True
        return False

    return match


def _principal_is_service(service: str) -> Any:
    def match(p: Any, where: str) -> bool:
        if not isinstance(p, dict) or set(p) - {"AWS", "Service", "Federated", "CanonicalUser"}:
            raise PolicyNotUnderstood(f"{where}: Principal {p!r}")
        return service in _as_list(p.get("Service", []))

    return match


def _role(arn: str) -> Any:
    """The moto IAM role of an ARN (path included, as AssumeRole wants it), or None."""
    m = re.fullmatch(r"arn:(aws[\w-]*):iam::(\d{12}):role/(?:.*/)?([^/]+)", arn or "")
    if not m:
        return None
    try:
        role = iam_backends[m[2]][m[1]].get_role(m[3])
    except Exception:  # noqa: BLE001 - NoSuchEntity
        return None
    return role if role.arn == arn else None


def _role_policies(role: Any) -> list[tuple[str, Any]]:
    docs: list[tuple[str, Any]] = [(f"inline policy {name} of {role.name}", doc) for name, doc in role.policies.items()]
    for arn, policy in role.managed_policies.items():
        version = next((v for v in policy.versions if v.is_default), None)
        if version is not None:
            docs.append((f"attached policy {arn}", version.document))
    return docs


def _canonical(role: Any) -> str:
    return f"arn:{role.partition}:iam::{role.account_id}:role/{role.name}"


def _render(template: str, account: str, session: str, what: str) -> str:
    out = template.replace("{{AccountID}}", account).replace("{{SessionName}}", session.replace("@", "-")).replace("{{SessionNameRaw}}", session)
    if "{{" in out:
        raise AuthnRefused(f"{what} {template!r}: only {{{{AccountID}}}}, {{{{SessionName}}}} and {{{{SessionNameRaw}}}} are emulated")
    return out


def eks_authenticate(caller: str, token: str) -> dict[str, Any]:
    """The user of an EKS token presented to the test-bed API server of `caller`; AuthnRefused."""
    conf = _authn_config()
    if caller not in conf["clusters"]:
        raise AuthnRefused(f"unknown test-bed cluster {caller!r}")
    t = _decode_eks_token(token)
    region, hub = conf["region"], conf["hub"]
    hub_account, caller_account = conf["clusters"][hub]["account"], conf["clusters"][caller]["account"]

    # a. the pod's service-account token, reviewed by the hub's API server
    code, review = _kube(conf, hub, "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                         {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t["pod_token"]}})
    if code not in (200, 201) or not isinstance(review, dict):
        raise AuthnRefused(f"TokenReview of the pod's token at the hub API server ({hub}) answered HTTP {code}")
    st = review.get("status") or {}
    if not st.get("authenticated"):
        raise AuthnRefused(f"the pod's service-account token is not valid in the hub cluster ({hub}): {st.get('error') or 'not authenticated'}")
    username = (st.get("user") or {}).get("username", "")
    m = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", username)
    if not m:
        raise AuthnRefused(f"the pod token's user {username!r} is not a service account")
    ns, sa = m[1], m[2]
    pod = ((st.get("user") or {}).get("extra") or {}).get("authentication.kubernetes.io/pod-name", ["pod"])[0]

    # b. its EKS Pod Identity association in the hub account -> role A
    found = [
        (cluster, a)
        for cluster in list(eks_backends[hub_account][region].clusters.values())
        if cluster.status == "ACTIVE"
        for a in list(_associations(cluster).values())
        if a["namespace"] == ns and a["serviceAccount"] == sa
    ]
    if not found:
        raise AuthnRefused(f"no EKS Pod Identity association for {ns}/{sa} in account {hub_account} ({region}): the pod has no AWS credentials")
    if len({a["roleArn"] for _, a in found}) > 1:
        names = ", ".join(f"{c.name} -> {a['roleArn']}" for c, a in found)
        raise AuthnRefused(f"ambiguous: the hub API server stands for every EKS cluster of account {hub_account}, and their associations of {ns}/{sa} name different roles ({names})")
    hub_cluster, assoc = found[0]
    if POD_IDENTITY_AGENT not in (getattr(hub_cluster, "addons", None) or {}):
        raise AuthnRefused(f"EKS cluster {hub_cluster.name} has no {POD_IDENTITY_AGENT} add-on: its pods get no Pod Identity credentials")
    a_arn = assoc["roleArn"]
    role_a = _role(a_arn)
    if role_a is None:
        raise AuthnRefused(f"role {a_arn} of the Pod Identity association of {ns}/{sa} does not exist")
    session_tags = not assoc.get("disableSessionTags", False)
    try:
        for action in ("sts:AssumeRole", "sts:TagSession"):
            if not trust_policy_allows(role_a.assume_role_policy_document, f"trust policy of {a_arn}", action, _principal_is_service(POD_IDENTITY_SERVICE), {}):
                raise AuthnRefused(f"the trust policy of {a_arn} does not allow {POD_IDENTITY_SERVICE} to {action}: EKS Pod Identity cannot assume it")

        # c. A may assume R, and R trusts A
        r_arn = t["role_arn"]
        if r_arn is None:  # no --role-arn: the pod's own role
            role, session = role_a, f"eks-{hub_cluster.name}-{pod}-{uuid.uuid4()}"[:64]
        else:
            role, session = _role(r_arn), t["session_name"]
            if role is None:
                raise AuthnRefused(f"role {r_arn} does not exist (AssumeRole by {a_arn})")
            actions = ["sts:AssumeRole"] + (["sts:TagSession"] if session_tags else [])
            for action in actions:
                if not identity_policy_allows(_role_policies(role_a), action, r_arn):
                    raise AuthnRefused(f"{a_arn} is not allowed {action} on {r_arn}: no statement of its inline or attached policies allows it")
                if not trust_policy_allows(role.assume_role_policy_document, f"trust policy of {r_arn}", action,
                                           _principal_is_role(a_arn, hub_account), {"aws:PrincipalArn": a_arn}):
                    raise AuthnRefused(f"the trust policy of {r_arn} does not allow {a_arn} to {action}")
    except PolicyNotUnderstood as e:
        raise AuthnRefused(f"policy not understood by the test bed's IAM evaluator ({e}): refused") from e

    # d. the cluster named in the token, in the account whose API server was called
    eks_cluster = eks_backends[caller_account][region].clusters.get(t["cluster"])
    if eks_cluster is None or eks_cluster.status != "ACTIVE":
        raise AuthnRefused(f"no EKS cluster {t['cluster']} in account {caller_account} ({region}), the account of the API server called ({caller})")

    # e. the mapping of R in that cluster
    account, canonical = role.account_id, _canonical(role)
    arn = f"arn:{role.partition}:sts::{account}:assumed-role/{role.name}/{session}"
    mode = (getattr(eks_cluster, "access_config", None) or {}).get("authenticationMode", "CONFIG_MAP")
    user: dict[str, Any] | None = None
    if mode in ("API", "API_AND_CONFIG_MAP"):
        entries = getattr(eks_cluster, "access_entries", None) or {}
        entry = entries.get(role.arn) or entries.get(canonical)
        if entry is not None:
            if entry["type"] != "STANDARD":
                raise AuthnRefused(f"access entry of {canonical} in {t['cluster']} has type {entry['type']}: only STANDARD entries are emulated")
            groups = [_render(g, account, session, "kubernetes group") for g in entry["kubernetesGroups"]]
            for p in entry["associatedAccessPolicies"].values():
                # the test bed's stand-in for EKS's access policy authorizer: cluster admin = system:masters
                if p["policyArn"].endswith("/AmazonEKSClusterAdminPolicy") and p["accessScope"]["type"] == "cluster" and "system:masters" not in groups:
                    groups.append("system:masters")
            user = {"username": _render(entry["username"], account, session, "access entry username"), "groups": groups}
        elif mode == "API":
            raise AuthnRefused(f"no access entry for {canonical} in EKS cluster {t['cluster']} (authentication mode API)")
    if user is None:
        code, cm = _kube(conf, caller, "GET", "/api/v1/namespaces/kube-system/configmaps/aws-auth")
        if code == 404:
            raise AuthnRefused(f"{canonical} is not mapped: no kube-system/aws-auth ConfigMap in {caller} (EKS cluster {t['cluster']}, authentication mode {mode})")
        if code != 200 or not isinstance(cm, dict):
            raise AuthnRefused(f"reading kube-system/aws-auth of {caller} answered HTTP {code}")
        try:
            import yaml  # moto's dependency

            map_roles = yaml.safe_load((cm.get("data") or {}).get("mapRoles") or "[]") or []
            map_accounts = yaml.safe_load((cm.get("data") or {}).get("mapAccounts") or "[]") or []
        except yaml.YAMLError as e:
            raise AuthnRefused(f"kube-system/aws-auth of {caller}: mapRoles/mapAccounts is not YAML ({e})") from e
        if not isinstance(map_roles, list):
            raise AuthnRefused(f"kube-system/aws-auth of {caller}: mapRoles is not a list")
        hit = next((e for e in map_roles if isinstance(e, dict) and str(e.get("rolearn", "")).lower() == canonical.lower()), None)
        if hit is not None:
            if not hit.get("username"):
                raise AuthnRefused(f"the mapRoles entry of {canonical} in kube-system/aws-auth of {caller} has no username")
            user = {
                "username": _render(str(hit["username"]), account, session, "mapRoles username"),
                "groups": [_render(str(g), account, session, "mapRoles group") for g in (hit.get("groups") or [])],
            }
        elif isinstance(map_accounts, list) and account in [str(a) for a in map_accounts]:
            user = {"username": canonical, "groups": []}
        else:
            raise AuthnRefused(f"{canonical} is not mapped in kube-system/aws-auth of {caller} (EKS cluster {t['cluster']}, authentication mode {mode}): no mapRoles entry with its rolearn")
    user["uid"] = f"aws-iam-authenticator:{account}:{role.id}"
    user["extra"] = {"arn": [arn], "canonicalArn": [canonical], "sessionName": [session], "principalId": [f"{role.id}:{session}"]}
    return user


def _eks_authn_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    caller = environ.get("PATH_INFO", "")[len(EKS_AUTHN_PATH):].strip("/")
    if environ.get("REQUEST_METHOD") != "POST":
        start_response("405 Method Not Allowed", [("Content-Type", "text/plain")])
        return [b"POST a TokenReview\n"]
    try:
        review = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
        token = review["spec"]["token"]
    except (ValueError, KeyError, TypeError):
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"expected a TokenReview\n"]
    try:
        status: dict[str, Any] = {"authenticated": True, "user": eks_authenticate(caller, token)}
        outcome = f"user {status['user']['username']} groups {status['user']['groups']}"
    except AuthnRefused as e:
        status, outcome = {"authenticated": False, "error": str(e)}, f"refused: {e}"
    except Exception as e:  # noqa: BLE001 - never a 500: the API server would retry
        traceback.print_exc()
        status = {"authenticated": False, "error": f"internal error of the test bed's EKS authentication: {e!r}"}
        outcome = status["error"]
    print(f"eks-authn {caller}: {outcome}", file=sys.stderr, flush=True)
    body = json.dumps({"apiVersion": review.get("apiVersion") or "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


_orig_dispatch_call = DomainDispatcherApplication.__call__


def _dispatch_call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
    if environ.get("PATH_INFO", "").startswith(EKS_AUTHN_PATH):
        return _eks_authn_app(environ, start_response)
    return _orig_dispatch_call(self, environ, start_response)


DomainDispatcherApplication.__call__ = _dispatch_call  # type: ignore[method-assign]

# ============================================================================ main

if __name__ == "__main__":
    from moto.server import main

    sys.argv[0] = "moto_server"
    sys.exit(main())
