"""Hatchling build hook: ship the start-up hook files into site-packages, for wheels and editable installs alike.

``drconv_yolo_startup.pth`` (and the PEP 829 ``.start`` file that supersedes it on Python >= 3.15) go to the root of
site-packages; the ``cfg`` folder goes inside the package so bundled model YAMLs resolve from an installed wheel.
"""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

STARTUP_FILES = ("drconv_yolo_startup.pth", "drconv_yolo_startup.start")


class StartupFilesHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})
        for name in STARTUP_FILES:
            build_data[key][name] = name
        if version != "editable":  # an editable install reads cfg/ from the source tree
            build_data[key]["cfg"] = "drconv_yolo/cfg"
