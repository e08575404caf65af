"""Cleanup: a drill deletes only what its pending record names, also what a killed drill left behind."""

from __future__ import annotations

from types import SimpleNamespace

from airflow_kafka_backup.engine.drill.cleanup import ScratchResources, clean_leftovers, clean_up, record_pending
from airflow_kafka_backup.engine.drill.report import pending_key


class Done:
    def __init__(self, value=None):
        self.value = value

    def result(self):
        return self.value


class FakeAdmin:
    def __init__(self, topics, groups):
        self.topics, self.groups = set(topics), set(groups)

    def list_topics(self, timeout):
        return SimpleNamespace(topics={t: None for t in self.topics})

    def delete_topics(self, topics, operation_timeout):
        self.topics -= set(topics)
        return {t: Done() for t in topics}

    def list_consumer_groups(self, request_timeout):
        return Done(SimpleNamespace(valid=[SimpleNamespace(group_id=g) for g in self.groups]))

    def delete_consumer_groups(self, groups, request_timeout):
        self.groups -= set(groups)
        return {g: Done() for g in groups}


class MemoryStore:
    bucket = "b"

    def __init__(self, objects=()):
        self.objects = {k: b"x" for k in objects}

    def put_bytes(self, key, data, content_type="application/json"):
        self.objects[key] = data

    def get_bytes(self, key):
        return self.objects[key]

    def list_keys(self, prefix):
        return [k for k in sorted(self.objects) if k.startswith(prefix)]

    def delete_keys(self, keys):
        for k in keys:
            self.objects.pop(k, None)
        return len(keys)

    def delete_prefix(self, prefix):
        return self.delete_keys(self.list_keys(prefix))


def test_clean_up_deletes_only_the_drills_own_things_and_its_pending_record():
    admin = FakeAdmin({"orders", "drill.orders"}, {"billing", "drill.billing", "progress"})
    store = MemoryStore({"p/_restores/d/r/restore-manifest.json", "p/_restores/d/r/offset-map/x.json",
                         "p/_restores/d/other/restore-manifest.json", "p/orders/partition=0/seg"})
    resources = ScratchResources("d/r", "kafka_default", ["drill.orders"], ["progress", "drill.billing"],
                                 "p/_restores/d/r")
    record_pending(store, "p", resources)
    outcome = clean_up(admin, store, "p", resources)
    assert outcome == {"topics": ["drill.orders"], "groups": ["progress", "drill.billing"], "restore_objects": 2,
                       "problems": []}
    assert admin.topics == {"orders"} and admin.groups == {"billing"}
    assert sorted(store.objects) == ["p/_restores/d/other/restore-manifest.json", "p/orders/partition=0/seg"]


def test_leftovers_of_a_killed_drill_are_cleaned_on_the_same_target_only():
    admin = FakeAdmin({"drill.a", "drill.b"}, set())
    store = MemoryStore()
    record_pending(store, "p", ScratchResources("d/killed", "kafka_default", ["drill.a"], [], None))
    record_pending(store, "p", ScratchResources("d/elsewhere", "kafka_dr", ["drill.b"], [], None))
    assert clean_leftovers(admin, store, "p", "kafka_default") == ["d/killed"]
    assert admin.topics == {"drill.b"}
    assert list(store.objects) == [pending_key("p", "d/elsewhere")]
