"""openstacksdk against kilnd, driven by manager/tests/openstack_sdk.rs.

Run with the venv's python: argv[1] is a disk image file to upload,
argv[2] the name of a bootable image kilnd already has. Connects through
the clouds.yaml in OS_CLIENT_CONFIG_FILE (cloud "kiln"), does a whole
session and prints what each step returned as one JSON object; the Rust
test checks every value against kilnd's own /v1.
"""

import json
import sys

import openstack

disk, boot_image = sys.argv[1], sys.argv[2]
out = {}

conn = openstack.connect(cloud="kiln")
out["token"] = conn.auth_token
out["project_id"] = conn.current_project_id

flavors = {f.name: f for f in conn.compute.flavors()}
out["flavors"] = sorted(flavors)
probe = flavors["k1.probe"]
out["probe_flavor"] = {"ram": probe.ram, "vcpus": probe.vcpus, "disk": probe.disk}

img = conn.image.create_image(
    name="sdk-img",
    filename=disk,
    disk_format="raw",
    container_format="bare",
    wait=True,
)
img = conn.image.get_image(img.id)
out["image"] = {"id": img.id, "status": img.status, "size": img.size,
                "hash": img.hash_value, "disk_format": img.disk_format}

kp = conn.compute.create_keypair(name="sdk-key")
out["keypair"] = {"name": kp.name, "fingerprint": kp.fingerprint,
                  "private_key": bool(kp.private_key)}

net = conn.network.find_network("lan")
boot = conn.image.find_image(boot_image)
server = conn.compute.create_server(
    name="sdk-s1",
    flavor_id=probe.id,
    image_id=boot.id,
    networks=[{"uuid": net.id}],
    key_name="sdk-key",
)
server = conn.compute.wait_for_server(server, status="ACTIVE", wait=120, interval=0.5)
out["server"] = {"id": server.id, "status": server.status,
                 "addresses": server.addresses, "key_name": server.key_name}

out["listed"] = [s.name for s in conn.compute.servers()]
got = conn.compute.get_server(server.id)
out["got"] = {"name": got.name, "flavor": got.flavor.get("original_name"),
              "power_state": got.power_state, "vm_state": got.vm_state}

console = ""
for _ in range(60):
    console = conn.compute.get_server_console_output(server)["output"]
    if "hello from a kiln probe" in console:
        break
    conn.compute.wait_for_server(server, status="ACTIVE", wait=1)
out["console"] = console

conn.compute.stop_server(server)
s = conn.compute.wait_for_server(server, status="SHUTOFF", wait=60, interval=0.5)
out["stopped"] = {"status": s.status, "power_state": s.power_state}
conn.compute.start_server(server)
s = conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
out["started"] = {"status": s.status, "power_state": s.power_state}

conn.compute.delete_server(server)
conn.compute.wait_for_delete(server, wait=60, interval=0.5)
out["after_delete"] = [s.id for s in conn.compute.servers()]
out["missing"] = conn.compute.find_server("sdk-s1") is None

conn.compute.delete_keypair("sdk-key")
conn.image.delete_image(img.id)
out["images_left"] = [i.name for i in conn.image.images()]

print(json.dumps(out))
