from keygate_dev.driver_client import Pod, mount_request


def test_version_and_mount(start_daemon, node_key):
    d = start_daemon()
    assert d.client.version().runtime_name == "keygate"
    objects = f"- objectName: pw\n  sealed: {node_key.seal(b'hunter2', 'default', 'pw')}\n"
    resp = d.client.mount(mount_request("spc", {"objects": objects}, Pod()))
    assert [(f.path, f.mode, f.contents) for f in resp.files] == [("pw", 0o644, b"hunter2")]
    assert resp.object_version[0].id == "sealed/pw"
